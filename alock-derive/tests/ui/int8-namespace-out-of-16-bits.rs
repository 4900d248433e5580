// Under a namespace, a 64-bit id makes an int8 key whose high 16 bits are
// the namespace: an integer namespace must fit them.
use alock::AdvisoryKey;

type JobPk = i64;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = 65536)]
struct JobId(i64);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = -1)]
struct UserId(std::num::NonZero<i64>);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = 192842, int8)]
struct TaskId(JobPk);

fn main() {}
