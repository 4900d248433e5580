use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
struct Order {
    #[advisory_key(id)]
    id: i32,
}

fn main() {}
