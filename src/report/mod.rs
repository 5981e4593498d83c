//! Output of the simulator: CSV rows, the PNG figure, the stdout tables (sweep and plan), the
//! plan as JSON, and writing files so that a failure never leaves a half-written one.
//!
//! Writers return bytes or take a `Write`, so tests can check them without touching disk.

mod csv_rows;
mod figure;
mod output;
mod plan;
mod summary;
mod table;

pub use csv_rows::write_csv;
pub use figure::{render_png, Figure};
pub use output::{check_writable, write_atomically};
pub use plan::{write_candidates, write_plan_json, write_plan_table, CandidateJson, PlanJson};
pub use summary::{floor_points, summarize, Summary};
pub use table::write_table;

/// Why a report could not be produced or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing CSV failed.
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Drawing the figure failed.
    #[error("cannot draw the figure: {0}")]
    Draw(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}
