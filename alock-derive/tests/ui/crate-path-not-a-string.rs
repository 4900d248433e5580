use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "orders", crate = ::alock)]
struct OrderId(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "jobs", crate = "not a path")]
struct JobId(i64);

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct TaskId {
    #[advisory_key(id, crate = "::alock")]
    id: i64,
}

#[derive(AdvisoryKey)]
#[advisory_key(int8, crate = "::alock", crate = "::alock")]
struct BatchId(i64);

fn main() {}
