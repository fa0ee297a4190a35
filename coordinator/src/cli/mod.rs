//! The job owner's commands, `submit` and `status`, and the task author's `run`.

pub mod run;
pub mod status;
pub mod submit;
