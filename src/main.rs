//! `warden`: thin glue over the library: parse → run → exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::parse() {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli::init_logging(args.verbose);
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("warden: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
