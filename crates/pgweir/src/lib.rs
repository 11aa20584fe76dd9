//! The pgweir binary's library side: command line, the `demo` and `import` subcommands, the admin
//! glue (console and HTTP over the proxy), and the throwaway PostgreSQL cluster it
//! (and the tests) use.

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config_rows;
pub mod demo;
pub mod healthcheck;
pub mod import;
pub mod logging;
pub mod scaling;
pub mod serve;
pub mod signals;
pub mod stats_log;
