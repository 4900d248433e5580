use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "orders")]
struct OrderId(i32);

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct JobId(i64);

alock::assert_distinct_namespaces!(OrderId, JobId);

fn main() {}
