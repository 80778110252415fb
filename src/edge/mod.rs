//! The network edge: what both loops need from the operating system, and nothing they
//! decide. Sockets, addresses, signals, the fine-grained alarm, handing memory back.

pub mod alarm;
pub mod conn;
pub mod memory;
pub mod net;
pub mod stop;
