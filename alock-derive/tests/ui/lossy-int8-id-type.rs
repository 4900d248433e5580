use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct Counter(u64);

#[derive(AdvisoryKey)]
#[advisory_key(int8)]
struct Slug {
    #[advisory_key(id)]
    slug: String,
}

fn main() {}
