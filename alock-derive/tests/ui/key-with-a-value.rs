use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(int8 = true)]
struct JobId(i64);

#[derive(AdvisoryKey)]
#[advisory_key(namespace("orders"))]
struct Order {
    #[advisory_key(id = "id")]
    id: i32,
}

fn main() {}
