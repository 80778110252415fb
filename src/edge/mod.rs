//! The network edge: what both loops need from the operating system, and nothing they
//! decide. Sockets, addresses, signals, the fine-grained alarm, handing memory back, and
//! the toolkit of a loop turn (`turn`) that both loops share.

pub mod alarm;
pub mod conn;
pub mod handover;
pub mod memory;
pub mod net;
pub mod stop;
pub mod tls;
pub mod turn;
