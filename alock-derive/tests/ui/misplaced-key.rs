use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "orders", id)]
struct Order {
    #[advisory_key(namespace = "ids")]
    id: i32,
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "invoices")]
struct Invoice {
    #[advisory_key(int8, id)]
    id: i32,
}

fn main() {}
