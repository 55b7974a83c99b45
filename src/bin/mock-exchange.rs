//! `mock-exchange`: command-line entry of the mock Binance exchange. Parses
//! the options and hands over to `binance_ingest::mock::run`.

use std::process::ExitCode;

use binance_ingest::mock::{self, Command};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let options = match mock::parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{}", mock::HELP);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("mock-exchange: {message}");
            return ExitCode::from(2);
        }
    };
    match mock::run(*options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mock-exchange: {error}");
            ExitCode::FAILURE
        }
    }
}
