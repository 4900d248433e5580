// Independent mistakes are all reported by one build.
use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = 3000000000, int8, colour = "red")]
struct Order {
    #[advisory_key(id)]
    id: i32,
    #[advisory_key(id)]
    customer: i32,
    #[advisory_key(idd)]
    note: String,
}

#[derive(AdvisoryKey)]
struct Invoice {
    number: i32,
    total: i32,
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "events")]
struct Event {
    #[advisory_key(id)]
    id: u64,
}

fn main() {}
