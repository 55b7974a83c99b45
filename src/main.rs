//! The `binance-ingest` command: parses the command line, sets up logging,
//! and runs the service or one of its subcommands.

use std::process::ExitCode;

use binance_ingest::cli::{self, Command};
use binance_ingest::{app, logging};

fn main() -> ExitCode {
    logging::init();
    let command = match cli::parse_command(std::env::args_os().skip(1), cli::process_env()) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("binance-ingest: {error}");
            eprintln!("Run 'binance-ingest --help' for the settings and their defaults.");
            return ExitCode::from(2);
        }
    };

    match command {
        Command::Help(text) | Command::Version(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig(config) => {
            // Building the TLS configuration parses every certificate of the
            // CA file, which the settings check alone does not.
            if let Err(error) = binance_ingest::tls::client_config(config.ca_file.as_deref()) {
                eprintln!("binance-ingest: BINANCE_INGEST_CA_FILE: {error}");
                return ExitCode::from(2);
            }
            let budget = binance_ingest::memory::Budget::worst_case(&config);
            print!("{}{}", config.describe(), budget.describe(config.memory_limit));
            for warning in binance_ingest::memory::level_warnings(&config, &budget) {
                println!("# warning: {warning}");
            }
            let settings = binance_ingest::memory::MemorySettings::from_config(&config);
            match settings.leak_detection_limit() {
                (line, true) => println!("# warning: {line}"),
                (line, false) => println!("# {line}"),
            }
            ExitCode::SUCCESS
        }
        Command::Run(config) => match app::run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error @ binance_ingest::error::Error::MemoryCritical { .. }) => {
                log::error!("{error}");
                ExitCode::from(binance_ingest::memory::EXIT_MEMORY_CRITICAL)
            }
            Err(error @ binance_ingest::error::Error::UnwrittenRecords { .. }) => {
                log::error!("{error}");
                ExitCode::from(binance_ingest::sink::EXIT_UNWRITTEN_RECORDS)
            }
            Err(error) => {
                log::error!("{error}");
                ExitCode::FAILURE
            }
        },
    }
}
