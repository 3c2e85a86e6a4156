//! A small stderr logger for the binaries: one line per event, with a UTC timestamp, the
//! level, the program's tag (e.g. `benchfsd[3]` for rank 3) and the message.

use std::io::Write;
use std::sync::OnceLock;

struct Logger {
    tag: String,
    level: log::LevelFilter,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, millis) = (now.as_secs(), now.subsec_millis());
        let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        let line = format!(
            "{h:02}:{m:02}:{s:02}.{millis:03} {:<5} {} {}\n",
            record.level(),
            self.tag,
            record.args()
        );
        // One write per line keeps lines of concurrent threads whole.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger once per process; later calls change nothing.
pub fn init(tag: impl Into<String>, level: log::LevelFilter) {
    let logger = LOGGER.get_or_init(|| Logger {
        tag: tag.into(),
        level,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.level);
    }
}
