use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "orders")]
struct OrderId(i32);

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "invoices")]
struct InvoiceId(i32);

// 845059820 is alock::namespace("orders").
#[derive(AdvisoryKey)]
#[advisory_key(namespace = 845059820)]
struct LegacyOrderId(i32);

alock::assert_distinct_namespaces!(OrderId, InvoiceId, LegacyOrderId);

fn main() {}
