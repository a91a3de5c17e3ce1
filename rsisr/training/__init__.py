"""Training of both LCMSR stages (`rsisr train ae`, `rsisr train lcm`)."""
