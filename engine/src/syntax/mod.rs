//! The text of pipeline files, below every other module: YAML or JSON read into a JSON value
//! with a line:column for every node (`source`), and the units values are written in
//! (`units`: durations such as `1h 30m`, sizes such as `512Mi`).

pub mod source;
mod units;

pub use source::{Format, Location, SourceMap, display_pointer, push_pointer};
pub use units::{ByteSize, DurationSpec};
