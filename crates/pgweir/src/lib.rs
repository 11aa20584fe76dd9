//! The pgweir binary's library side: command line, the `demo` subcommand, and the
//! throwaway PostgreSQL cluster it (and the tests) use.

pub mod cli;
pub mod cluster;
pub mod demo;
pub mod logging;
