//! A link's fence (`fence.sh`): a temporary file beside DEST that a link's receiving end
//! removes before it writes anything, so that the controller can stop that end from ever
//! writing by removing it first, without waiting for the link's sender. One `rm` of one
//! name, so exactly one of the two succeeds.

use super::names::parent;
use super::Call;

/// Creates `fence` beside `dest`, empty and exclusively. Exits 1, the cause on stderr, if
/// it cannot.
pub fn create_fence(dest: &str, fence: &str) -> String {
    Call::new("bounce_fence_create")
        .arg(parent(dest))
        .arg(fence)
        .code()
}

/// What a link's receiving end runs before anything else, as a prefix (it ends in `; `):
/// removes `fence`, or exits 1 with the cause on stderr when it is gone, the link having
/// been cut before this end started.
pub fn pass_fence(fence: &str) -> String {
    format!("{}; ", Call::new("bounce_fence_pass").arg(fence).code())
}

/// Removes `fence` and prints `cut` if it was there: the receiving end it guards will then
/// never write. Prints nothing when that end has passed it.
pub fn cut_fence(fence: &str) -> String {
    Call::new("bounce_fence_cut").arg(fence).code()
}
