// A raw #[advisory_key(int8)] key spans the whole int8 key space, so it can
// lock what any other int8 key type locks.
use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "orders")]
struct OrderId(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "jobs")]
struct JobId(i64);

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct BatchId(i64);

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct UserId(i64);

// Fine: a raw int8 type meets no int4 pair.
alock::assert_distinct_namespaces!(OrderId, BatchId);

alock::assert_distinct_namespaces!(OrderId, BatchId, JobId);

alock::assert_distinct_namespaces!(JobId, BatchId);

alock::assert_distinct_namespaces!(UserId, BatchId);

// A hand-written key has no known key space.
alock::assert_distinct_namespaces!(OrderId, i64);

fn main() {}
