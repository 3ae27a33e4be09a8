//! `warden`: thin glue over the library: parse → run → exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::parse() {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli::set_quiet(args.quiet);
    cli::set_verbose(args.verbose);
    cli::init_logging(args.verbose);
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            let code = err.exit_code();
            let message = err.to_string();
            eprintln!("{}warden: {message}", cli::priority(tracing::Level::ERROR));
            // A command that answered with its own JSON document (error included) gets no
            // second one.
            if cli::json_requested() && !cli::stdout_written() {
                cli::print_json(&cli::error_json(&message, code));
            }
            ExitCode::from(code)
        }
    };
    // Output that could not be written (other than to a reader that went away) turns a
    // success into an I/O error; a failure keeps its own code.
    let code = match cli::stdout_failure() {
        Some(e) if code == ExitCode::SUCCESS => {
            eprintln!("warden: cannot write to stdout: {e}");
            ExitCode::from(sqlite_warden::util::exit::IOERR)
        }
        _ => code,
    };
    // An audit record that could not be written is a failure too: the record of what
    // happened is part of the job.
    match sqlite_warden::guard::audit::lost_records() {
        Some((n, first)) => {
            eprintln!("warden: {n} audit record(s) could not be written; the first: {first}");
            if code == ExitCode::SUCCESS { ExitCode::from(sqlite_warden::util::exit::IOERR) } else { code }
        }
        None => code,
    }
}
