use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "orders")]
struct Order {
    #[advisory_key(id)]
    id: i32,
    #[advisory_key(id)]
    customer: i32,
}

fn main() {}
