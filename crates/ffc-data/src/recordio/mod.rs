//! MXNet/dmlc RecordIO: `.rec` frames, image record headers, and `.idx` indexed access.
//!
//! See [`frame`] for the frame layout and [`IrHeader`] for the record header. The dataset
//! layouts built on top of these records (insightface's meta record and plain `im2rec`) live in
//! [`crate::RecordDataset`].

pub mod frame;
mod header;
mod reader;
mod writer;

pub use frame::{Frame, FrameError, MAGIC, MAX_PART_LEN, encode_frames, parse_frame};
pub use header::{HeaderError, IR_HEADER_LEN, IrHeader};
pub use reader::{Record, RecordReader};
pub use writer::RecordWriter;

pub(crate) use reader::read_existing;
