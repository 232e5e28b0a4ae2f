//! A phase's actions: commands, writes, restarts, faults, link changes and sleeps on
//! the running boot, and reboots and power cycles that hand back a reconnected guest.

use std::time::Instant;

use crate::check::timeline::RunEvent;
use crate::error::usage;
use crate::guest::SshKey;
use crate::scenario::{Action, Phase, PhaseStart};

use super::context::{PairContext, PairState};
use super::fault::inject_fault;
use super::lost;
use super::up::{Up, connect, cycle};

/// Run one action; reboots and power cycles hand back a reconnected guest.
pub(super) async fn act(
    ctx: &PairContext,
    up: Up,
    action: &Action,
    key: &SshKey,
    phase: &Phase,
    origin: Instant,
    state: &mut PairState,
) -> anyhow::Result<Up> {
    state
        .timeline
        .event(RunEvent::Action, &format!("{action:?}"));
    let how = match action {
        Action::Reboot => PhaseStart::Reboot,
        Action::PowerCycle => PhaseStart::PowerCycle,
        _ => {
            // The guest going away during an action is a loss the scenario did not ask for.
            let during = format!("phase {}, action {action:?}", phase.name);
            let work = run_action(ctx, &up, action, phase, state);
            lost::guarded(&up.vm, &up.journal, &during, work).await?;
            let mut up = up;
            up.touched();
            return Ok(up);
        }
    };
    let vm = cycle(ctx, up, how, &phase.boot, key).await?;
    connect(ctx, vm, key, phase, origin, state).await
}

/// Run an action that keeps the guest on its boot.
pub(super) async fn run_action(
    ctx: &PairContext,
    up: &Up,
    action: &Action,
    phase: &Phase,
    state: &mut PairState,
) -> anyhow::Result<()> {
    match action {
        Action::Run(r) => {
            (ctx.status)(&format!("phase {}: running {}", phase.name, r.cmd));
            let out = up.guest.exec(&r.cmd).await?;
            if out.status != r.status {
                return Err(usage(format!(
                    "scenario {}: action `{}` exited {} (it declares status {}): {}",
                    ctx.pair.scenario.path.display(),
                    r.cmd,
                    out.status,
                    r.status,
                    out.stderr.trim()
                )));
            }
        }
        Action::Write(w) => {
            up.guest
                .write_file(&w.path, w.content.as_bytes(), w.mode.unwrap_or(0o644))
                .await?;
        }
        Action::Restart(r) => {
            (ctx.status)(&format!("phase {}: restarting {}", phase.name, r.unit));
            // A failing restart is the system under test's business: expectations judge it.
            let status =
                crate::guest::systemd::restart(&up.guest, r.unit.as_str(), r.no_block).await?;
            state
                .timeline
                .event(RunEvent::Restart, &format!("{} exited {status}", r.unit));
        }
        Action::Fault(name) => inject_fault(ctx, &up.guest, name).await?,
        Action::Link(l) => {
            up.vm
                .set_link(matches!(l, crate::scenario::LinkState::Up))
                .await?
        }
        Action::Sleep(d) => tokio::time::sleep(d.0).await,
        // `act` cycles the VM itself; these never get here.
        Action::Reboot | Action::PowerCycle => {}
    }
    Ok(())
}
