//! The default CPU backend: Flex measured fastest here (see `ovseg bench` and the README table).

pub type Cpu = burn::backend::Flex;
