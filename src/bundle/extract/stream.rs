//! The byte stream under the tar reader: gzip detection, decompression and
//! metering.
//!
//! ```text
//! client reader -> Source (counts compressed bytes) -> [MultiGzDecoder] -> Stream (counts
//!                  output, enforces max_total_bytes and the ratio) -> tar::Archive
//! ```
//!
//! The tar crate turns every I/O error into its own message, so the readers
//! never rely on the error travelling back up intact: the first failure (a
//! limit, a gzip error, a failing client reader) is parked in the shared
//! [`Meter`] as a finished [`ExtractError`] and every later read fails too.
//! Whoever sees an `io::Error` come out of tar asks the meter for the real
//! cause with [`Meter::error`].

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;

use super::error::ExtractError;
use super::limits::{Limits, RATIO_GRACE_BYTES};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Counters and the first failure, shared by the reader layers.
pub(super) struct Meter {
    max_total_bytes: u64,
    max_ratio: u64,
    gzip: bool,
    compressed: Cell<u64>,
    uncompressed: Cell<u64>,
    failure: RefCell<Option<ExtractError>>,
}

impl Meter {
    fn failed(&self) -> bool {
        self.failure.borrow().is_some()
    }

    /// Parks `error` unless an earlier failure is already parked, and returns
    /// the stand-in error to hand to whoever called `read`.
    fn fail(&self, error: ExtractError) -> io::Error {
        let mut slot = self.failure.borrow_mut();
        if slot.is_none() {
            *slot = Some(error);
        }
        stand_in()
    }

    /// The error to report for `err`, which came out of the tar reader: the
    /// parked failure if there is one, `fallback(err)` otherwise.
    pub(super) fn error(
        &self,
        err: io::Error,
        fallback: impl FnOnce(io::Error) -> ExtractError,
    ) -> ExtractError {
        match self.failure.borrow_mut().take() {
            Some(parked) => parked,
            None => fallback(err),
        }
    }

    /// Accounts for `n` bytes out of the decompressor.
    fn produced(&self, n: usize) -> io::Result<()> {
        let out = self.uncompressed.get().saturating_add(n as u64);
        self.uncompressed.set(out);
        if out > self.max_total_bytes {
            return Err(self.fail(ExtractError::TooLarge {
                limit: self.max_total_bytes,
            }));
        }
        let compressed = self.compressed.get();
        if self.gzip && out > RATIO_GRACE_BYTES && out > self.max_ratio.saturating_mul(compressed) {
            return Err(self.fail(ExtractError::CompressionRatio {
                limit: self.max_ratio,
                compressed,
                uncompressed: out,
            }));
        }
        Ok(())
    }
}

fn stand_in() -> io::Error {
    io::Error::other("archive stream aborted")
}

/// The client's reader, counting the (compressed) bytes it hands out.
pub(super) struct Source<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.meter.failed() {
            return Err(stand_in());
        }
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    let total = self.meter.compressed.get().saturating_add(n as u64);
                    self.meter.compressed.set(total);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.meter.fail(ExtractError::Read(e))),
            }
        }
    }
}

enum Decoder<R: Read> {
    Plain(R),
    Gzip(MultiGzDecoder<R>),
}

/// The decompressed tar stream handed to `tar::Archive`.
pub(super) struct Stream<R: Read> {
    decoder: Decoder<Source<io::Chain<io::Cursor<Vec<u8>>, R>>>,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.meter.failed() {
            return Err(stand_in());
        }
        loop {
            let res = match &mut self.decoder {
                Decoder::Plain(r) => r.read(buf),
                Decoder::Gzip(r) => r.read(buf),
            };
            match res {
                Ok(n) => {
                    self.meter.produced(n)?;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A failing Source parked its own error first; `fail` keeps it.
                Err(e) => return Err(self.meter.fail(ExtractError::Gzip(e))),
            }
        }
    }
}

impl<R: Read> Stream<R> {
    /// Reads whatever follows the tar end-of-archive marker, so that the
    /// gzip trailer (CRC and length) of the last member is verified and the
    /// client's stream is consumed. Limits keep applying.
    pub(super) fn drain(&mut self) -> Result<(), ExtractError> {
        io::copy(self, &mut io::sink())
            .map(drop)
            .map_err(|e| self.meter.error(e, ExtractError::Tar))
    }
}

/// Wraps `reader`, sniffing the gzip magic from its first two bytes.
pub(super) fn open<R: Read>(
    mut reader: R,
    limits: &Limits,
) -> Result<(Stream<R>, Rc<Meter>), ExtractError> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < magic.len() {
        match reader.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ExtractError::Read(e)),
        }
    }
    let gzip = magic[..got] == GZIP_MAGIC;
    let meter = Rc::new(Meter {
        max_total_bytes: limits.max_total_bytes,
        max_ratio: limits.max_compression_ratio,
        gzip,
        compressed: Cell::new(0),
        uncompressed: Cell::new(0),
        failure: RefCell::new(None),
    });
    // The sniffed bytes go back in front; Source counts them as it re-reads them.
    let source = Source {
        inner: io::Cursor::new(magic[..got].to_vec()).chain(reader),
        meter: Rc::clone(&meter),
    };
    let decoder = if gzip {
        Decoder::Gzip(MultiGzDecoder::new(source))
    } else {
        Decoder::Plain(source)
    };
    let stream = Stream {
        decoder,
        meter: Rc::clone(&meter),
    };
    Ok((stream, meter))
}
