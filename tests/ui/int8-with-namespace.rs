use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "jobs", int8)]
struct JobId(i64);

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
#[advisory_key(namespace = 5)]
struct TaskId(i32);

fn main() {}
