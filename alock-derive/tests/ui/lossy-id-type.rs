use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "counters")]
struct Counter(u64);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "users")]
struct User {
    #[advisory_key(id)]
    name: String,
    age: u8,
}

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "readings")]
struct Reading(f64);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "drafts")]
struct Draft(Option<i32>);

fn main() {}
