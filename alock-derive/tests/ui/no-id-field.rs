use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "orders")]
struct Order {
    id: i32,
    customer: i32,
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "pairs")]
struct Pair(i32, i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "markers")]
struct Marker;

fn main() {}
