//! The pre-pass: what the instrumenter needs to know about a module before
//! rewriting it, and whether a worker may reuse one instance for many runs.

use super::SandboxError;
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::Instruction;
use wasmparser::{DataKind, Operator, Parser, Payload, TypeRef};

/// A data segment that initialises memory 0 at instantiation.
pub struct ActiveData<'a> {
    pub offset: Vec<Instruction<'a>>,
    pub len: u32,
}

#[derive(Default)]
pub struct Shape<'a> {
    pub types: u32,
    pub imported_funcs: u32,
    pub defined_funcs: u32,
    pub imported_globals: u32,
    pub defined_globals: u32,
    pub memories: u32,
    /// Initial size of the memory, in pages.
    pub initial_pages: u32,
    /// Mutable globals the module defines: (index, initialiser).
    pub mutable_globals: Vec<(u32, Vec<Instruction<'a>>)>,
    /// Every data segment in order; `None` for a passive one.
    pub data: Vec<Option<ActiveData<'a>>>,
    pub has_data_count: bool,
    /// Why one instance cannot be reset and reused, if it cannot.
    pub not_resettable: Option<String>,
}

impl Shape<'_> {
    pub fn resettable(&self) -> bool {
        self.not_resettable.is_none()
    }
}

/// Instructions that change state a reset cannot restore (tables, segments).
fn changes_unrestorable_state(op: &Operator) -> bool {
    matches!(
        op,
        Operator::MemoryInit { .. }
            | Operator::DataDrop { .. }
            | Operator::TableInit { .. }
            | Operator::ElemDrop { .. }
            | Operator::TableSet { .. }
            | Operator::TableGrow { .. }
            | Operator::TableFill { .. }
            | Operator::TableCopy { .. }
    )
}

/// A constant expression as the instructions of a function body (without its `end`).
fn const_instructions<'a>(expr: &wasmparser::ConstExpr<'a>) -> Result<Vec<Instruction<'a>>, SandboxError> {
    let mut ops = expr.get_operators_reader();
    let mut out = Vec::new();
    while !ops.is_end_then_eof() {
        let op = ops.read().map_err(|e| SandboxError::Invalid(e.to_string()))?;
        out.push(RoundtripReencoder.instruction(op).map_err(|e| SandboxError::Unsupported(e.to_string()))?);
    }
    Ok(out)
}

pub fn shape(wasm: &[u8]) -> Result<Shape<'_>, SandboxError> {
    let invalid = |e: wasmparser::BinaryReaderError| SandboxError::Invalid(e.to_string());
    let mut s = Shape::default();
    let mut blocker = None;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(r) => s.types = r.count(),
            Payload::ImportSection(r) => {
                for import in r {
                    match import.map_err(invalid)?.ty {
                        TypeRef::Func(_) => s.imported_funcs += 1,
                        TypeRef::Global(_) => {
                            s.imported_globals += 1;
                            blocker.get_or_insert_with(|| "it imports a global".to_string());
                        }
                        TypeRef::Memory(_) => {
                            return Err(SandboxError::Unsupported("imports a memory; a WASI command defines and exports its own".into()))
                        }
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(r) => s.defined_funcs = r.count(),
            Payload::GlobalSection(r) => {
                s.defined_globals = r.count();
                for (i, g) in r.into_iter().enumerate() {
                    let g = g.map_err(invalid)?;
                    if g.ty.mutable {
                        let index = s.imported_globals + i as u32;
                        s.mutable_globals.push((index, const_instructions(&g.init_expr)?));
                    }
                }
            }
            Payload::MemorySection(r) => {
                for m in r {
                    let m = m.map_err(invalid)?;
                    if m.memory64 || m.shared {
                        return Err(SandboxError::Unsupported("64-bit and shared memories are not supported".into()));
                    }
                    // Validation caps a 32-bit memory at 65536 pages.
                    s.initial_pages = m.initial as u32;
                    s.memories += 1;
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let name = e.map_err(invalid)?.name;
                    if name.starts_with("idlecore_") {
                        return Err(SandboxError::Unsupported(format!("exports `{name}`; the idlecore_ prefix is reserved")));
                    }
                }
            }
            Payload::StartSection { .. } => {
                blocker.get_or_insert_with(|| "it has a start function".to_string());
            }
            Payload::DataCountSection { .. } => s.has_data_count = true,
            Payload::DataSection(r) => {
                for d in r {
                    let d = d.map_err(invalid)?;
                    match d.kind {
                        DataKind::Active { memory_index: 0, offset_expr } => {
                            s.data.push(Some(ActiveData { offset: const_instructions(&offset_expr)?, len: d.data.len() as u32 }))
                        }
                        _ => {
                            blocker.get_or_insert_with(|| "it has passive data segments".to_string());
                            s.data.push(None);
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) if blocker.is_none() => {
                let mut ops = body.get_operators_reader().map_err(invalid)?;
                while !ops.eof() {
                    let op = ops.read().map_err(invalid)?;
                    if changes_unrestorable_state(&op) {
                        blocker = Some(format!("it uses {op:?}, which changes tables or segments"));
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    if s.memories != 1 {
        return Err(SandboxError::Unsupported(format!("defines {} memories; exactly one is supported", s.memories)));
    }
    s.not_resettable = blocker;
    Ok(s)
}
