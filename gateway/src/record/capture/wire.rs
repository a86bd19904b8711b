//! A bounds-checked reader over a message body that tolerates truncation: every read returns
//! `None` rather than reading past the end, and the last field of a streamed (incomplete) message
//! can be taken as a prefix.

pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    pub(super) fn i16(&mut self) -> Option<i16> {
        let (head, rest) = self.buf.split_first_chunk::<2>()?;
        self.buf = rest;
        Some(i16::from_be_bytes(*head))
    }

    pub(super) fn i32(&mut self) -> Option<i32> {
        let (head, rest) = self.buf.split_first_chunk::<4>()?;
        self.buf = rest;
        Some(i32::from_be_bytes(*head))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.i32().map(|v| v as u32)
    }

    /// A NUL-terminated string's bytes, without the NUL.
    pub(super) fn cstr(&mut self) -> Option<&'a [u8]> {
        let nul = self.buf.iter().position(|&b| b == 0)?;
        let s = &self.buf[..nul];
        self.buf = &self.buf[nul + 1..];
        Some(s)
    }

    /// A NUL-terminated string, lossily decoded (servers may use other encodings).
    pub(super) fn cstr_lossy(&mut self) -> Option<String> {
        self.cstr().map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// A NUL-terminated string, or everything left when the terminator was cut off with the rest
    /// of a streamed message. The flag is true when the string was complete.
    pub(super) fn cstr_or_rest(&mut self) -> (&'a [u8], bool) {
        match self.cstr() {
            Some(s) => (s, true),
            None => (self.rest(), false),
        }
    }

    /// Exactly `n` bytes, or what is left of them (a prefix) when the body ends first.
    pub(super) fn up_to(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.buf.len());
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        head
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// A count of `i16` format codes followed by the codes.
    pub(super) fn format_codes(&mut self) -> Option<Vec<i16>> {
        let n = usize::try_from(self.i16()?).ok()?;
        // Each code takes two bytes: a count larger than the body is a lie, not an allocation.
        if n * 2 > self.remaining() {
            return None;
        }
        (0..n).map(|_| self.i16()).collect()
    }
}
