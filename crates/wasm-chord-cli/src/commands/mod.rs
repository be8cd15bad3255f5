//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod run;
pub mod tokenize;
