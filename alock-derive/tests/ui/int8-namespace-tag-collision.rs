use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "jobs")]
struct JobId(i64);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "users")]
struct UserId(i64);

// 62586 is alock::namespace_tag("jobs"): the two keys' int8s would meet.
#[derive(AdvisoryKey)]
#[advisory_key(namespace = 62586)]
struct LegacyJobId(i64);

alock::assert_distinct_namespaces!(JobId, UserId, LegacyJobId);

fn main() {}
