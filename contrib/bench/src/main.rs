//! rtpp_bench: load generator and meter for media relays driven by the
//! classic rtpproxy control protocol. See `rtpp_bench --help` and
//! README.md beside this crate.

mod calls;
mod clock;
mod compare;
mod control;
mod ctrl;
mod flood;
mod options;
mod packet;
mod procfs;
mod relayproc;
mod report;
mod runctl;
mod scenario;
mod session;
mod stats;
mod summary;
mod sweep;
mod usage;

use options::{Config, Mode, Parsed};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match options::parse(&args) {
        Ok(Parsed::Run(cfg)) => cfg,
        Ok(Parsed::Help) => {
            print!("{}", options::usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rtpp_bench: {e}\nTry 'rtpp_bench --help'.");
            return ExitCode::from(1);
        }
    };
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtpp_bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// A wrong `--pid` (a shell, a wrapper) would silently report the relay
/// as idle; the relay is the process holding the control socket.
fn warn_if_pid_is_not_the_relay(cfg: &Config, relay_pid: Option<i32>) {
    let (Some(pid), Some(spec)) = (relay_pid, cfg.ctrl.as_ref()) else {
        return;
    };
    if ctrl::pid_holds_control_socket(pid, spec) == Some(false) {
        eprintln!(
            "rtpp_bench: warning: process {pid} does not hold the control socket {spec}; \
             its CPU and memory are not the relay's (is --pid the relay itself, not a shell \
             or wrapper?)"
        );
    }
}

fn run(cfg: &Config) -> Result<(), String> {
    if cfg.mode == Mode::BaselineRelay {
        return flood::serve_baseline_relay(cfg);
    }
    runctl::install_stop_handlers()?;
    let relay_pid = procfs::resolve_pid(cfg.pid, cfg.pidfile.as_deref())?;
    warn_if_pid_is_not_the_relay(cfg, relay_pid);
    let run = runctl::new_run_id();
    let json = cfg.json.as_deref();
    match cfg.mode {
        Mode::Calls => calls::run_calls(cfg, cfg.calls, relay_pid, run)?.emit(json),
        Mode::Flood => {
            let flood = flood::run_flood(cfg, relay_pid, run)?;
            flood.emit(json)?;
            if cfg.with_baseline && !runctl::stop_requested() {
                let baseline = flood::run_baseline(cfg, run.wrapping_add(1))?;
                baseline.emit(json)?;
                flood::compare_with_baseline(&flood, &baseline).emit(json)?;
            }
            Ok(())
        }
        Mode::Baseline => flood::run_baseline(cfg, run)?.emit(json),
        Mode::Control => control::run_control(cfg, relay_pid, run)?.emit(json),
        Mode::Sweep => sweep::run_sweep(cfg, relay_pid, run),
        Mode::Compare => compare::run_compare(cfg),
        Mode::BaselineRelay => Ok(()),
    }
}
