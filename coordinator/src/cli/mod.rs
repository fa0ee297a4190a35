//! The job owner's commands: `submit` and `status`.

pub mod status;
pub mod submit;
