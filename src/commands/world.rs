//! The world of ranks a command runs in: one process, or the MPI world `mpirun` started.

use smelt_frontend::Diagnostic;
use smelt_runtime::comm::{Collectives, Solo};
use std::sync::Arc;
use std::time::Duration;

/// Joins the world for `ranks` data-parallel ranks: with one rank this process alone;
/// otherwise the MPI world (this smelt must be built with the `mpi` feature and started
/// by `mpirun -np RANKS`). A process started by `mpirun` with several ranks must be
/// given their number, so that no rank trains alone and overwrites another's files.
pub fn join(ranks: usize, timeout: Duration) -> Result<Arc<dyn Collectives>, Diagnostic> {
    let world = mpi_world(timeout)?;
    let size = world.as_ref().map_or(1, |w| w.size());
    if size != ranks.max(1) {
        let why = if world.is_some() {
            format!("mpirun started {size} processes but --dp is {ranks}: give --dp {size}")
        } else if cfg!(feature = "mpi") {
            format!("--dp {ranks} runs one process per rank: start it with mpirun -np {ranks} smelt train ...")
        } else {
            format!("--dp {ranks} needs MPI, and this smelt was built without it (cargo build --features mpi, with an MPI library such as Open MPI installed)")
        };
        return Err(Diagnostic::plain(why));
    }
    Ok(match world {
        Some(w) => w,
        None => Arc::new(Solo),
    })
}

#[cfg(feature = "mpi")]
fn mpi_world(timeout: Duration) -> Result<Option<Arc<dyn Collectives>>, Diagnostic> {
    match smelt_runtime::comm::mpi::MpiWorld::init(timeout) {
        Ok(Some(w)) => Ok(Some(Arc::new(w))),
        Ok(None) => Ok(None),
        Err(e) => Err(Diagnostic::plain(e.to_string())),
    }
}

/// Without MPI this process cannot join the world a launcher started, but it can see
/// that one was started (the launchers' environment), and must then refuse: each rank
/// would train alone and overwrite the others' files.
#[cfg(not(feature = "mpi"))]
fn mpi_world(_: Duration) -> Result<Option<Arc<dyn Collectives>>, Diagnostic> {
    match smelt_runtime::comm::launched().and_then(|l| l.size) {
        Some(size) if size > 1 => Err(Diagnostic::plain(format!(
            "this process is one of {size} started by an MPI launcher, but this smelt was built without MPI (cargo build --features mpi, with an MPI library such as Open MPI installed)"
        ))),
        _ => Ok(None),
    }
}
