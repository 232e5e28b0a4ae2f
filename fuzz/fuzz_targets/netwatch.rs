//! Fuzz the netwatch port: the lines a guest sends the host beside the D-Bus relay (the
//! hello, connection attempts, the recorder's gate-probe answers). Every input, cut into
//! chunks as the first byte says, must end in parsed lines or counted bad ones, never a
//! panic; an answer's times are never out of order.

#![no_main]

use coldboot::guest::recorder::net::{Line, Lines, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut lines = Lines::default();
    for piece in rest.chunks(chunk) {
        for line in lines.push(piece) {
            if let Ok(Line::GateAnswer(a)) = line.and_then(|t| parse(&t)) {
                assert!(a.answered_us >= a.sent_us);
                let _ = (a.status(), a.healthy());
            }
        }
    }
});
