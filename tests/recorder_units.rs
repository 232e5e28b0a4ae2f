//! The read of every unit through the recorder, as a real guest answered it:
//! `tests/fixtures/guest/recorder-units-read.bin` holds every byte the model guest's relay
//! sent on a clean cold boot (`recipe:vm-images/ccci-model?gate=self`, recorded with
//! `COLDBOOT_RECORDER_RAW=DIR coldboot run ...` on systemd 252), the read's start is in
//! `.reads.txt` (bytes taken in before the read was asked, and the named units), and
//! `.systemctl.txt` is `systemctl show` of the same units, run over SSH just after the
//! read on the idle guest. Replayed through the framer and the protocol, the read must
//! give what systemctl gave, unit for unit.

use coldboot::guest::recorder::protocol::Protocol;
use coldboot::guest::recorder::stream::{Frame, Framer};
use coldboot::guest::recorder::units::Scope;
use coldboot::guest::systemd::{UnitState, parse_show};

const FIXTURE: &str = "tests/fixtures/guest/recorder-units-read";

/// Feed the recorded bytes in `chunk`-sized pieces, asking for the read where the live
/// harness asked for it; the read's result.
fn replay(chunk: usize) -> coldboot::guest::recorder::units::UnitsText {
    let bytes = std::fs::read(format!("{FIXTURE}.bin")).unwrap();
    let reads = std::fs::read_to_string(format!("{FIXTURE}.reads.txt")).unwrap();
    let (offset, named) = reads.trim_end().split_once('\t').unwrap();
    let offset: usize = offset.parse().unwrap();
    let named: Vec<String> = named.split(' ').map(str::to_string).collect();
    let mut framer = Framer::default();
    let mut proto = Protocol::default();
    let mut frames = Vec::new();
    let mut feed = |piece: &[u8], proto: &mut Protocol| {
        for piece in piece.chunks(chunk) {
            frames.clear();
            framer
                .push(piece, &mut frames)
                .expect("the recorded stream frames");
            for f in &frames {
                match f {
                    Frame::Hello { .. } => {
                        proto.opening();
                    }
                    Frame::Message(m) => {
                        proto.on_message(m, &mut Vec::new());
                    }
                    _ => {}
                }
            }
        }
    };
    feed(&bytes[..offset], &mut proto);
    let calls = proto.read_units(1, &named, Scope::Every);
    assert!(!calls.is_empty());
    assert!(proto.take_reads().is_empty(), "nothing answered yet");
    feed(&bytes[offset..], &mut proto);
    let mut done = proto.take_reads();
    assert_eq!(done.len(), 1, "the read finished");
    let (id, read) = done.pop().unwrap();
    assert_eq!(id, 1);
    read.expect("the read succeeded")
}

fn by_id(states: Vec<UnitState>) -> std::collections::BTreeMap<String, UnitState> {
    states.into_iter().map(|s| (s.id.clone(), s)).collect()
}

#[test]
fn the_recorded_read_gives_what_systemctl_gave() {
    let read = replay(4096);
    assert!(
        read.manager.contains("UserspaceTimestampMonotonic="),
        "{}",
        read.manager
    );
    assert!(
        read.manager.contains("FinishTimestampMonotonic="),
        "{}",
        read.manager
    );
    let systemctl = std::fs::read_to_string(format!("{FIXTURE}.systemctl.txt")).unwrap();
    let ours = parse_show(&read.units).unwrap();
    let theirs = parse_show(&systemctl).unwrap();
    // The same blocks in the same order: the named units as named, then every unit.
    let ids = |s: &[UnitState]| s.iter().map(|u| u.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&ours), ids(&theirs));
    assert!(ours.len() > 150, "{} units", ours.len());
    let (mut ours, theirs) = (by_id(ours), by_id(theirs));
    // systemctl prints a mount's file system type as `Type=`; the evidence reads `Type`
    // as a service's type only, so the read does not ask for it.
    for (id, state) in ours.iter_mut() {
        if id.ends_with(".mount") {
            state.service_type = theirs[id].service_type.clone();
        }
    }
    for (id, state) in &ours {
        assert_eq!(state, &theirs[id], "{id}");
    }
    // The deploy-proxy service's start, as the evidence uses it.
    let proxy = &ours["deploy-proxy.service"];
    assert_eq!(proxy.active_state, "active");
    assert_eq!(proxy.timeout_start_us, Some(900_000_000));
    assert!(proxy.active_enter_us > proxy.inactive_exit_us);
}

#[test]
fn the_read_does_not_depend_on_how_the_stream_was_cut() {
    assert_eq!(replay(4096), replay(97));
}

#[test]
fn after_lists_match_the_critical_chains_reading_of_systemctl() {
    let read = replay(4096);
    let systemctl = std::fs::read_to_string(format!("{FIXTURE}.systemctl.txt")).unwrap();
    let ours = coldboot::guest::systemd::chain::UnitTable::parse(&read.units);
    let theirs = coldboot::guest::systemd::chain::UnitTable::parse(&systemctl);
    assert_eq!(ours, theirs);
}
