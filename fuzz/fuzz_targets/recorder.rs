//! Fuzz the recorder's stream: the bytes a guest sends the host over the virtio-serial
//! port (the relay's hello, PID 1's auth reply, D-Bus messages). Every input, cut into
//! chunks as the first byte says, must end in frames, counted malformed messages or a
//! broken stream, never a panic; what decodes goes through the protocol and the queue.
//! A read of every unit is asked at the hello, as the harness asks one, so replies
//! (the recorded `tests/fixtures/guest/recorder-units-read.bin` as a seed) reach the
//! read's bookkeeping and rendering too.

#![no_main]

use coldboot::guest::recorder::protocol::Protocol;
use coldboot::guest::recorder::stream::{Frame, Framer};
use coldboot::guest::recorder::units::Scope;
use coldboot::guest::recorder::Queue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut framer = Framer::default();
    let mut proto = Protocol::default();
    let mut queue = Queue::default();
    let mut frames = Vec::new();
    for piece in rest.chunks(chunk) {
        frames.clear();
        let broken = framer.push(piece, &mut frames);
        for f in &frames {
            match f {
                Frame::Hello { .. } => {
                    let _ = proto.opening();
                    let _ = proto.read_units(
                        1,
                        &["deploy-proxy.service".to_string()],
                        Scope::Every,
                    );
                }
                Frame::Message(m) => {
                    let mut events = Vec::new();
                    let _ = proto.on_message(m, &mut events);
                    for e in &events {
                        queue.apply(e);
                    }
                }
                Frame::AuthOk | Frame::Malformed(_) => {}
            }
        }
        if broken.is_err() {
            break;
        }
    }
    let _ = queue.jobs();
    for (_, read) in proto.take_reads() {
        if let Ok(read) = read {
            let _ = coldboot::guest::systemd::parse_show(&read.units);
        }
    }
});
