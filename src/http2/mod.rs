//! HTTP/2 plumbing the server, the client and the wire trace share, below
//! `h2`: reading frame headers, following the frames that cross a socket,
//! and keeping `h2`'s DATA-frame budget from mistaking a peer that cuts its
//! data small for an attacker.
//!
//! * [`frame`] — [`FrameHead`]: the 9-octet frame header, its types, flags
//!   and names; parsed and written here only, pure.
//! * [`scan`] — [`FrameScanner`]: frame headers out of a byte stream, pure.
//! * [`coalesce`] — [`FrameScanner::scan_joining`]: runs of DATA frames of
//!   one stream within a read joined into one frame, in place, pure.
//! * [`pace`] — [`ReadPacer`] and [`Paced`]: yield to the calls after a
//!   read full of small DATA frames; [`data_frame_budget`].
//!
//! Nothing here knows `h2`'s types: `server` and `client` put these under
//! their `h2` connections and hand the budget to their `h2` builders.

pub mod coalesce;
pub mod frame;
pub mod pace;
pub mod scan;

pub use frame::FrameHead;
pub use pace::{Paced, ReadPacer, SMALL_DATA_FRAME, data_frame_budget, poll_read_joined};
pub use scan::FrameScanner;
