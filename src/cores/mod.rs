//! The pure cores: data structures and decisions that touch no socket and read no clock.
//! Each takes the time as an argument where time matters, and each is tested alone.

pub mod allow;
pub mod buffers;
pub mod escape;
pub mod liveness;
pub mod protocol;
pub mod proxy;
pub mod ratelimit;
pub mod rng;
pub mod subject;
pub mod timer;
pub mod tls;
pub mod upgrade;
pub mod vocab;
pub mod wheel;
