use alock::AdvisoryKey;

#[derive(AdvisoryKey)]
#[advisory_key(namespace = "shapes")]
enum Shape {
    Circle(i32),
    Square(i32),
}

fn main() {}
