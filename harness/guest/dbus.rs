//! The D-Bus wire format, as much as the recorder needs to talk to PID 1. Pure.
//!
//! The recorder's stream comes from inside the guest, so it is untrusted input: every
//! length is checked against what is left and against [`MAX_MESSAGE`], nesting is capped
//! at [`MAX_DEPTH`], and a bad message is an error, never a panic. Hand-written rather than
//! zbus because the host must claim uid 0 in `AUTH EXTERNAL` (PID 1 compares the claim
//! with the relay's credentials, not ours) and needs a sans-I/O decoder it can fuzz; the
//! subset is small (the marshalling of the D-Bus specification, both byte orders).

use std::fmt;

/// The largest message accepted: PID 1's replies to the recorder are tens of KiB (a queue
/// of 200 jobs is about 30 KiB); anything larger is a broken or hostile stream.
pub const MAX_MESSAGE: usize = 1 << 20;
/// The deepest nesting of containers accepted (the specification allows 64 in all).
pub const MAX_DEPTH: usize = 32;
/// The length of a message's fixed header, up to and including the fields' array length.
const FIXED_HEADER: usize = 16;

/// A decoded D-Bus value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `y`
    Byte(u8),
    /// `b`
    Bool(bool),
    /// `n`
    I16(i16),
    /// `q`
    U16(u16),
    /// `i`
    I32(i32),
    /// `u`
    U32(u32),
    /// `x`
    I64(i64),
    /// `t`
    U64(u64),
    /// `d`
    Double(f64),
    /// `s`, `o` and `g`
    Str(String),
    /// `h`: an index into the message's file descriptors (none ever arrive here).
    Fd(u32),
    /// `a` of anything but dict entries.
    Array(Vec<Value>),
    /// `a{..}`
    Dict(Vec<(Value, Value)>),
    /// `(..)`
    Struct(Vec<Value>),
    /// `v`
    Variant(Box<Value>),
}

impl Value {
    /// The string of an `s`, `o` or `g`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An unsigned integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Byte(n) => Some(n.into()),
            Value::U16(n) => Some(n.into()),
            Value::U32(n) => Some(n.into()),
            Value::U64(n) => Some(n),
            _ => None,
        }
    }

    /// The value inside a variant (or the value itself).
    pub fn unwrap_variant(&self) -> &Value {
        match self {
            Value::Variant(v) => v.unwrap_variant(),
            v => v,
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A method call.
    Call,
    /// A method's reply.
    Return,
    /// A method's error reply.
    Error,
    /// A signal.
    Signal,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Call, reply, error or signal.
    pub kind: Kind,
    /// The sender's serial.
    pub serial: u32,
    /// For replies and errors: the serial of the call.
    pub reply_serial: Option<u32>,
    /// The object path.
    pub path: Option<String>,
    /// The interface.
    pub interface: Option<String>,
    /// The method or signal name.
    pub member: Option<String>,
    /// For errors: the error's name.
    pub error_name: Option<String>,
    /// The body's signature.
    pub signature: String,
    /// The body's values.
    pub body: Vec<Value>,
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn err<T>(what: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(what.into()))
}

/// The whole length of the message at the start of `buf`, once its fixed header is
/// there (`None` before). An error means the stream cannot be framed any further.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < FIXED_HEADER {
        return Ok(None);
    }
    let little = match buf[0] {
        b'l' => true,
        b'B' => false,
        b => return err(format!("byte order {b:#04x} is neither 'l' nor 'B'")),
    };
    if buf[3] != 1 {
        return err(format!("protocol version {} (only 1 exists)", buf[3]));
    }
    let word = |at: usize| {
        let b = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let body = word(4) as usize;
    let fields = word(12) as usize;
    let total = (FIXED_HEADER + fields).next_multiple_of(8) + body;
    if fields > MAX_MESSAGE || body > MAX_MESSAGE || total > MAX_MESSAGE {
        return err(format!(
            "a message of {total} bytes is larger than the {MAX_MESSAGE} accepted"
        ));
    }
    Ok(Some(total))
}

/// Decode one whole message (`bytes` is exactly [`frame_len`] long).
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    let Some(total) = frame_len(bytes)? else {
        return err("shorter than a message header");
    };
    if total != bytes.len() {
        return err(format!(
            "{} bytes where the header says {total}",
            bytes.len()
        ));
    }
    let kind = match bytes[1] {
        1 => Kind::Call,
        2 => Kind::Return,
        3 => Kind::Error,
        4 => Kind::Signal,
        t => return err(format!("message type {t}")),
    };
    let mut r = Reader {
        buf: bytes,
        at: 0,
        little: bytes[0] == b'l',
    };
    r.at = 8;
    let serial = r.u32()?;
    if serial == 0 {
        return err("serial 0");
    }
    let fields = r.value(b"a(yv)", 0)?;
    r.align(8)?;
    let mut m = Message {
        kind,
        serial,
        reply_serial: None,
        path: None,
        interface: None,
        member: None,
        error_name: None,
        signature: String::new(),
        body: Vec::new(),
    };
    let Value::Array(fields) = fields else {
        return err("header fields are not an array");
    };
    for f in fields {
        let Value::Struct(pair) = f else {
            return err("a header field is not a struct");
        };
        let (Some(Value::Byte(code)), Some(v)) = (pair.first(), pair.get(1)) else {
            return err("a header field without its code");
        };
        let v = v.unwrap_variant();
        let text = || v.as_str().map(str::to_string);
        match code {
            1 => m.path = text(),
            2 => m.interface = text(),
            3 => m.member = text(),
            4 => m.error_name = text(),
            5 => m.reply_serial = v.as_u64().and_then(|n| u32::try_from(n).ok()),
            8 => m.signature = text().unwrap_or_default(),
            _ => {}
        }
    }
    let sig = m.signature.clone().into_bytes();
    let mut at = 0;
    while at < sig.len() {
        let end = complete_type(&sig, at, 0)?;
        m.body.push(r.value(&sig[at..end], 0)?);
        at = end;
    }
    if r.at != bytes.len() {
        return err(format!("{} bytes left after the body", bytes.len() - r.at));
    }
    Ok(m)
}

/// The end (exclusive) of the single complete type starting at `sig[at]`.
fn complete_type(sig: &[u8], at: usize, depth: usize) -> Result<usize, WireError> {
    if depth > MAX_DEPTH {
        return err("signature nested too deeply");
    }
    match sig.get(at) {
        None => err("signature ends inside a type"),
        Some(
            b'y' | b'b' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'd' | b's' | b'o' | b'g'
            | b'h' | b'v',
        ) => Ok(at + 1),
        Some(b'a') => complete_type(sig, at + 1, depth + 1),
        Some(b'(') => {
            let mut i = at + 1;
            if sig.get(i) == Some(&b')') {
                return err("empty struct in signature");
            }
            while sig.get(i) != Some(&b')') {
                i = complete_type(sig, i, depth + 1)?;
            }
            Ok(i + 1)
        }
        Some(b'{') => {
            if !matches!(sig.get(at.wrapping_sub(1)), Some(b'a')) || at == 0 {
                return err("dict entry outside an array");
            }
            let key = complete_type(sig, at + 1, depth + 1)?;
            if key != at + 2 || matches!(sig[at + 1], b'v' | b'a' | b'(' | b'{') {
                return err("dict entry key is not a basic type");
            }
            let value = complete_type(sig, key, depth + 1)?;
            if sig.get(value) != Some(&b'}') {
                return err("dict entry without its closing brace");
            }
            Ok(value + 1)
        }
        Some(&c) => err(format!("type code {:?} in signature", c as char)),
    }
}

fn alignment(code: u8) -> usize {
    match code {
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b'h' | b's' | b'o' | b'a' => 4,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => 1,
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    little: bool,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return err(format!("{n} bytes needed at offset {}", self.at));
        };
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn align(&mut self, to: usize) -> Result<(), WireError> {
        let pad = self.at.next_multiple_of(to) - self.at;
        if self.take(pad)?.iter().any(|b| *b != 0) {
            return err("padding is not zero");
        }
        Ok(())
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.align(N)?;
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        if !self.little {
            b.reverse();
        }
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    fn text(&mut self, len: usize) -> Result<String, WireError> {
        let bytes = self.take(len)?.to_vec();
        if self.take(1)? != [0] {
            return err("string not ended by a nul byte");
        }
        String::from_utf8(bytes).map_err(|_| WireError("string is not UTF-8".into()))
    }

    fn value(&mut self, sig: &[u8], depth: usize) -> Result<Value, WireError> {
        if depth > MAX_DEPTH {
            return err("values nested too deeply");
        }
        let Some(&code) = sig.first() else {
            return err("empty signature");
        };
        Ok(match code {
            b'y' => Value::Byte(self.take(1)?[0]),
            b'b' => match self.u32()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                n => return err(format!("boolean {n}")),
            },
            b'n' => Value::I16(i16::from_le_bytes(self.fixed()?)),
            b'q' => Value::U16(u16::from_le_bytes(self.fixed()?)),
            b'i' => Value::I32(i32::from_le_bytes(self.fixed()?)),
            b'u' => Value::U32(self.u32()?),
            b'h' => Value::Fd(self.u32()?),
            b'x' => Value::I64(i64::from_le_bytes(self.fixed()?)),
            b't' => Value::U64(u64::from_le_bytes(self.fixed()?)),
            b'd' => Value::Double(f64::from_le_bytes(self.fixed()?)),
            b's' | b'o' => {
                let len = self.u32()? as usize;
                Value::Str(self.text(len)?)
            }
            b'g' => {
                let len = self.take(1)?[0] as usize;
                Value::Str(self.text(len)?)
            }
            b'v' => {
                let len = self.take(1)?[0] as usize;
                let inner = self.text(len)?.into_bytes();
                let end = complete_type(&inner, 0, depth)?;
                if end != inner.len() {
                    return err("a variant's signature holds more than one type");
                }
                Value::Variant(Box::new(self.value(&inner, depth + 1)?))
            }
            b'a' => {
                let len = self.u32()? as usize;
                if len > MAX_MESSAGE {
                    return err(format!("array of {len} bytes"));
                }
                let elem_end = complete_type(sig, 1, depth)?;
                let elem = &sig[1..elem_end];
                self.align(alignment(elem[0]))?;
                let end = self
                    .at
                    .checked_add(len)
                    .filter(|e| *e <= self.buf.len())
                    .ok_or_else(|| {
                        WireError(format!("array of {len} bytes overruns the message"))
                    })?;
                let mut items = Vec::new();
                let mut pairs = Vec::new();
                while self.at < end {
                    let v = self.value(elem, depth + 1)?;
                    if elem[0] == b'{' {
                        match v {
                            Value::Struct(kv) if kv.len() == 2 => {
                                let mut kv = kv.into_iter();
                                if let (Some(k), Some(v)) = (kv.next(), kv.next()) {
                                    pairs.push((k, v));
                                }
                            }
                            _ => return err("a dict entry that is not a pair"),
                        }
                    } else {
                        items.push(v);
                    }
                }
                if self.at != end {
                    return err("array elements overrun the array's length");
                }
                if elem[0] == b'{' {
                    Value::Dict(pairs)
                } else {
                    Value::Array(items)
                }
            }
            b'(' | b'{' => {
                self.align(8)?;
                let close = if code == b'(' { b')' } else { b'}' };
                let mut fields = Vec::new();
                let mut i = 1;
                while sig.get(i).is_some_and(|c| *c != close) {
                    let end = complete_type(sig, i, depth)?;
                    fields.push(self.value(&sig[i..end], depth + 1)?);
                    i = end;
                }
                Value::Struct(fields)
            }
            c => return err(format!("type code {:?}", c as char)),
        })
    }
}

/// A method call's argument: the recorder only ever passes strings.
pub type Arg<'a> = &'a str;

/// Encode a method call to `destination`'s `interface.member` on `path` with string
/// arguments, little-endian.
pub fn method_call(
    serial: u32,
    destination: &str,
    path: &str,
    interface: &str,
    member: &str,
    args: &[Arg],
) -> Vec<u8> {
    let mut fields = Writer::default();
    // The fields array starts at offset 12 of the whole message, so its content at 16,
    // which is 8-aligned: aligning in this buffer from 0 is the same.
    let mut field = |code: u8, sig: &str, value: &str| {
        fields.align(8);
        fields.byte(code);
        fields.signature(sig);
        match sig {
            "g" => fields.signature(value),
            _ => fields.string(value),
        }
    };
    field(1, "o", path);
    field(2, "s", interface);
    field(3, "s", member);
    field(6, "s", destination);
    let sig = "s".repeat(args.len());
    if !args.is_empty() {
        field(8, "g", &sig);
    }
    let mut body = Writer::default();
    for a in args {
        body.string(a);
    }
    let mut out = Writer::default();
    out.buf.extend_from_slice(&[b'l', 1, 0, 1]);
    out.u32(body.buf.len() as u32);
    out.u32(serial);
    out.u32(fields.buf.len() as u32);
    out.buf.extend_from_slice(&fields.buf);
    out.align(8);
    out.buf.extend_from_slice(&body.buf);
    out.buf
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn align(&mut self, to: usize) {
        let n = self.buf.len().next_multiple_of(to);
        self.buf.resize(n, 0);
    }
    fn byte(&mut self, b: u8) {
        self.buf.push(b);
    }
    fn u32(&mut self, n: u32) {
        self.align(4);
        self.buf.extend_from_slice(&n.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
    fn signature(&mut self, s: &str) {
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }
}

/// Where systemd's unit objects live.
const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";

/// systemd's object path for a unit (its label escaped as in
/// [`crate::guest::systemd::signals`]).
pub fn unit_path(unit: &str) -> String {
    format!(
        "{UNIT_PATH_PREFIX}{}",
        crate::guest::systemd::signals::escape_label(unit)
    )
}

/// The unit a systemd object path names (the inverse of [`unit_path`]), if it is one.
pub fn unit_of_path(path: &str) -> Option<String> {
    crate::guest::systemd::signals::unescape_label(path.strip_prefix(UNIT_PATH_PREFIX)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_call_round_trips_through_the_decoder() {
        let bytes = method_call(
            7,
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1/unit/deploy_2dproxy_2eservice",
            "org.freedesktop.DBus.Properties",
            "Get",
            &["org.freedesktop.systemd1.Service", "TimeoutStartUSec"],
        );
        assert_eq!(frame_len(&bytes).unwrap(), Some(bytes.len()));
        let m = decode(&bytes).unwrap();
        assert_eq!(m.kind, Kind::Call);
        assert_eq!(m.serial, 7);
        assert_eq!(m.member.as_deref(), Some("Get"));
        assert_eq!(m.signature, "ss");
        assert_eq!(
            m.body,
            vec![
                Value::Str("org.freedesktop.systemd1.Service".into()),
                Value::Str("TimeoutStartUSec".into())
            ]
        );
    }

    #[test]
    fn unit_paths_escape_as_systemd_does_and_back() {
        let p = unit_path("deploy-proxy.service");
        assert_eq!(p, "/org/freedesktop/systemd1/unit/deploy_2dproxy_2eservice");
        assert_eq!(unit_of_path(&p).as_deref(), Some("deploy-proxy.service"));
        assert_eq!(
            unit_path("9p@x.mount"),
            "/org/freedesktop/systemd1/unit/_39p_40x_2emount"
        );
        assert_eq!(unit_of_path("/org/freedesktop/systemd1/unit/_zz"), None);
        assert_eq!(unit_of_path("/org/freedesktop/systemd1/job/12"), None);
    }

    #[test]
    fn broken_bytes_are_errors_not_panics() {
        let good = method_call(1, "d", "/p", "i.f", "M", &["x"]);
        // Every truncation and every single-byte change decodes or errs, never panics.
        for n in 0..good.len() {
            let _ = frame_len(&good[..n]);
            let _ = decode(&good[..n]);
        }
        for i in 0..good.len() {
            for b in [0u8, 1, 0x7f, 0xff, b'a', b'(', b'{'] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = decode(&bad);
            }
        }
        assert!(frame_len(b"X\x01\x00\x01............").is_err());
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&(MAX_MESSAGE as u32 + 1).to_le_bytes());
        assert!(frame_len(&huge).is_err());
    }

    #[test]
    fn nesting_past_the_cap_is_refused() {
        let sig = format!("{}y", "a".repeat(MAX_DEPTH + 2));
        assert!(complete_type(sig.as_bytes(), 0, 0).is_err());
        assert!(complete_type(b"a{sv}", 0, 0).is_ok());
        assert!(complete_type(b"{sv}", 0, 0).is_err());
        assert!(complete_type(b"a{vs}", 0, 0).is_err());
    }
}
