//! The trace digest: every event taken from the queue, with its time and the ids it names, is
//! fed to BLAKE3. Same scenario and seed, same digest; any divergence changes it.

pub struct Trace {
    hasher: blake3::Hasher,
    buffer: Vec<u8>,
    pub events: u64,
}

const FLUSH_AT: usize = 64 * 1024;

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hasher: blake3::Hasher::new(),
            buffer: Vec::with_capacity(FLUSH_AT + 64),
            events: 0,
        }
    }
}

impl Trace {
    /// Records one event: its time, a tag naming its kind, and up to three ids.
    pub fn record(&mut self, at_us: u64, tag: u8, a: u64, b: u64, c: u64) {
        self.events += 1;
        self.buffer.extend_from_slice(&at_us.to_le_bytes());
        self.buffer.push(tag);
        for word in [a, b, c] {
            self.buffer.extend_from_slice(&word.to_le_bytes());
        }
        if self.buffer.len() >= FLUSH_AT {
            self.hasher.update(&self.buffer);
            self.buffer.clear();
        }
    }

    pub fn digest(mut self) -> String {
        self.hasher.update(&self.buffer);
        self.hasher.finalize().to_hex().to_string()
    }
}
