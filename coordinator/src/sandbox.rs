//! Checks a task module at upload and instruments it once, for every worker:
//!
//! - **Fuel.** An exported mutable global `idlecore_fuel` (i64) is charged the
//!   number of instructions of each straight-line segment when the segment is
//!   entered, and checked at every function entry and loop header. When it
//!   falls below zero the module executes `unreachable`. The host sets the
//!   budget before `_start` and reads what is left afterwards, so a runaway task
//!   stops at the same instruction on every machine and fuel used is exact.
//! - **Memory cap.** Every `memory.grow` becomes a call to an added function
//!   that fails (returns -1, as the instruction does when memory is exhausted)
//!   past the exported mutable global `idlecore_memory_cap` (pages), which the
//!   host sets per task. A refusal also sets `idlecore_memory_denied`.
//!
//! Segments end at every instruction that can transfer control (`block`,
//! `loop`, `if`, `else`, `end`, branches, calls, `return`, `unreachable`, and
//! the exception and tail-call instructions), so a segment is always run whole
//! once entered, except when it traps.

use wasm_encoder::reencode::{Error as ReencodeError, Reencode, RoundtripReencoder};
use wasm_encoder::{
    CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection, GlobalSection, GlobalType,
    Instruction, Module, SectionId, TypeSection, ValType,
};
use wasmparser::{Operator, Parser, Payload, TypeRef};

pub const FUEL_EXPORT: &str = "idlecore_fuel";
pub const MEMORY_CAP_EXPORT: &str = "idlecore_memory_cap";
/// Set to 1 when a `memory.grow` was refused, so the host can tell a trap
/// that follows from other traps.
pub const MEMORY_DENIED_EXPORT: &str = "idlecore_memory_denied";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    #[error("components are not supported; upload a core WASI preview1 module")]
    Component,
    #[error("unsupported module: {0}")]
    Unsupported(String),
}

/// What the pre-pass learned about the module.
#[derive(Default)]
struct Shape {
    types: u32,
    imported_funcs: u32,
    defined_funcs: u32,
    imported_globals: u32,
    defined_globals: u32,
    memories: u32,
}

fn shape(wasm: &[u8]) -> Result<Shape, SandboxError> {
    let invalid = |e: wasmparser::BinaryReaderError| SandboxError::Invalid(e.to_string());
    let mut s = Shape::default();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(r) => s.types = r.count(),
            Payload::ImportSection(r) => {
                for import in r {
                    match import.map_err(invalid)?.ty {
                        TypeRef::Func(_) => s.imported_funcs += 1,
                        TypeRef::Global(_) => s.imported_globals += 1,
                        TypeRef::Memory(_) => {
                            return Err(SandboxError::Unsupported("imports a memory; a WASI command defines and exports its own".into()))
                        }
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(r) => s.defined_funcs = r.count(),
            Payload::GlobalSection(r) => s.defined_globals = r.count(),
            Payload::MemorySection(r) => {
                for m in r {
                    let m = m.map_err(invalid)?;
                    if m.memory64 || m.shared {
                        return Err(SandboxError::Unsupported("64-bit and shared memories are not supported".into()));
                    }
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
            _ => {}
        }
    }
    if s.memories != 1 {
        return Err(SandboxError::Unsupported(format!("defines {} memories; exactly one is supported", s.memories)));
    }
    Ok(s)
}

/// Validates `wasm` and returns its instrumented form.
pub fn instrument(wasm: &[u8]) -> Result<Vec<u8>, SandboxError> {
    if Parser::is_component(wasm) {
        return Err(SandboxError::Component);
    }
    wasmparser::Validator::new().validate_all(wasm).map_err(|e| SandboxError::Invalid(e.to_string()))?;
    let s = shape(wasm)?;
    let mut r = Instrumenter {
        grow_type: s.types,
        grow_func: s.imported_funcs + s.defined_funcs,
        fuel: s.imported_globals + s.defined_globals,
        cap: s.imported_globals + s.defined_globals + 1,
        denied: s.imported_globals + s.defined_globals + 2,
        done: [false; 5],
    };
    let mut module = Module::new();
    r.parse_core_module(&mut module, Parser::new(0), wasm).map_err(|e| match e {
        ReencodeError::ParseError(e) => SandboxError::Invalid(e.to_string()),
        other => SandboxError::Unsupported(other.to_string()),
    })?;
    let out = module.finish();
    wasmparser::Validator::new()
        .validate_all(&out)
        .map_err(|e| SandboxError::Unsupported(format!("instrumentation produced an invalid module: {e}")))?;
    Ok(out)
}

/// The sections this pass extends, in module order.
const TYPE: usize = 0;
const FUNC: usize = 1;
const GLOBAL: usize = 2;
const EXPORT: usize = 3;
const CODE: usize = 4;

struct Instrumenter {
    grow_type: u32,
    grow_func: u32,
    fuel: u32,
    cap: u32,
    denied: u32,
    /// Whether each extended section has been written.
    done: [bool; 5],
}

/// Canonical position of a section, to know which missing ones go before it.
fn rank(id: SectionId) -> u8 {
    match id {
        SectionId::Type => 1,
        SectionId::Import => 2,
        SectionId::Function => 3,
        SectionId::Table => 4,
        SectionId::Memory => 5,
        SectionId::Tag => 6,
        SectionId::Global => 7,
        SectionId::Export => 8,
        SectionId::Start => 9,
        SectionId::Element => 10,
        SectionId::DataCount => 11,
        SectionId::Code => 12,
        SectionId::Data => 13,
        _ => 0,
    }
}

impl Instrumenter {
    fn add_type(&self, types: &mut TypeSection) {
        types.ty().function([ValType::I32], [ValType::I32]);
    }
    fn add_func(&self, funcs: &mut FunctionSection) {
        funcs.function(self.grow_type);
    }
    fn add_globals(&self, globals: &mut GlobalSection) {
        let ty = |val_type| GlobalType { val_type, mutable: true, shared: false };
        globals.global(ty(ValType::I64), &ConstExpr::i64_const(i64::MAX));
        globals.global(ty(ValType::I32), &ConstExpr::i32_const(65536));
        globals.global(ty(ValType::I32), &ConstExpr::i32_const(0));
    }
    fn add_exports(&self, exports: &mut ExportSection) {
        exports.export(FUEL_EXPORT, ExportKind::Global, self.fuel);
        exports.export(MEMORY_CAP_EXPORT, ExportKind::Global, self.cap);
        exports.export(MEMORY_DENIED_EXPORT, ExportKind::Global, self.denied);
    }
    /// `grow(delta) = size + delta > cap ? (denied = 1, -1) : memory.grow(delta)`,
    /// in 64-bit arithmetic.
    fn add_grow(&self, code: &mut CodeSection) {
        let mut f = Function::new([]);
        for i in [
            Instruction::MemorySize(0),
            Instruction::I64ExtendI32U,
            Instruction::LocalGet(0),
            Instruction::I64ExtendI32U,
            Instruction::I64Add,
            Instruction::GlobalGet(self.cap),
            Instruction::I64ExtendI32U,
            Instruction::I64GtU,
            Instruction::If(wasm_encoder::BlockType::Result(ValType::I32)),
            Instruction::I32Const(1),
            Instruction::GlobalSet(self.denied),
            Instruction::I32Const(-1),
            Instruction::Else,
            Instruction::LocalGet(0),
            Instruction::MemoryGrow(0),
            Instruction::End,
            Instruction::End,
        ] {
            f.instruction(&i);
        }
        code.function(&f);
    }

    /// Writes an extended section that the module lacks, with only our entries.
    fn emit_missing(&mut self, module: &mut Module, which: usize) {
        if self.done[which] {
            return;
        }
        self.done[which] = true;
        match which {
            TYPE => {
                let mut s = TypeSection::new();
                self.add_type(&mut s);
                module.section(&s);
            }
            FUNC => {
                let mut s = FunctionSection::new();
                self.add_func(&mut s);
                module.section(&s);
            }
            GLOBAL => {
                let mut s = GlobalSection::new();
                self.add_globals(&mut s);
                module.section(&s);
            }
            EXPORT => {
                let mut s = ExportSection::new();
                self.add_exports(&mut s);
                module.section(&s);
            }
            _ => {
                let mut s = CodeSection::new();
                self.add_grow(&mut s);
                module.section(&s);
            }
        }
    }

    fn charge(f: &mut Function, fuel: u32, cost: u64, check: bool) {
        f.instruction(&Instruction::GlobalGet(fuel));
        f.instruction(&Instruction::I64Const(cost as i64));
        f.instruction(&Instruction::I64Sub);
        f.instruction(&Instruction::GlobalSet(fuel));
        if check {
            f.instruction(&Instruction::GlobalGet(fuel));
            f.instruction(&Instruction::I64Const(0));
            f.instruction(&Instruction::I64LtS);
            f.instruction(&Instruction::If(wasm_encoder::BlockType::Empty));
            f.instruction(&Instruction::Unreachable);
            f.instruction(&Instruction::End);
        }
    }
}

/// Whether an instruction ends a metered segment.
fn ends_segment(op: &Operator) -> bool {
    matches!(
        op,
        Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::Else
            | Operator::End
            | Operator::Br { .. }
            | Operator::BrIf { .. }
            | Operator::BrTable { .. }
            | Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. }
            | Operator::Return
            | Operator::Call { .. }
            | Operator::CallIndirect { .. }
            | Operator::CallRef { .. }
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. }
            | Operator::ReturnCallRef { .. }
            | Operator::Unreachable
            | Operator::TryTable { .. }
            | Operator::Throw { .. }
            | Operator::ThrowRef
            | Operator::Try { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::Delegate { .. }
            | Operator::Rethrow { .. }
    )
}

impl Reencode for Instrumenter {
    type Error = std::convert::Infallible;

    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        let next = before.map(rank).unwrap_or(u8::MAX);
        for (which, id) in [(TYPE, SectionId::Type), (FUNC, SectionId::Function), (GLOBAL, SectionId::Global), (EXPORT, SectionId::Export), (CODE, SectionId::Code)] {
            // A missing section goes right before the first later section.
            if rank(id) < next && before != Some(id) {
                self.emit_missing(module, which);
            }
        }
        Ok(())
    }

    fn parse_type_section(
        &mut self,
        types: &mut TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        RoundtripReencoder.parse_type_section(types, section)?;
        self.add_type(types);
        self.done[TYPE] = true;
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        funcs: &mut FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        RoundtripReencoder.parse_function_section(funcs, section)?;
        self.add_func(funcs);
        self.done[FUNC] = true;
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        RoundtripReencoder.parse_global_section(globals, section)?;
        self.add_globals(globals);
        self.done[GLOBAL] = true;
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        RoundtripReencoder.parse_export_section(exports, section)?;
        self.add_exports(exports);
        self.done[EXPORT] = true;
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        for body in section {
            self.parse_function_body(code, body?)?;
        }
        self.add_grow(code);
        self.done[CODE] = true;
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        body: wasmparser::FunctionBody<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        let mut locals = Vec::new();
        for local in body.get_locals_reader()? {
            let (count, ty) = local?;
            locals.push((count, RoundtripReencoder.val_type(ty)?));
        }
        let mut f = Function::new(locals);
        let mut segment: Vec<Instruction<'_>> = Vec::new();
        // The first segment starts at function entry: it checks the budget.
        let mut check = true;
        let mut ops = body.get_operators_reader()?;
        while !ops.eof() {
            let op = ops.read()?;
            let ends = ends_segment(&op);
            let is_loop = matches!(op, Operator::Loop { .. });
            let instr = match op {
                Operator::MemoryGrow { mem: 0 } => Instruction::Call(self.grow_func),
                other => RoundtripReencoder.instruction(other)?,
            };
            segment.push(instr);
            if ends {
                Self::charge(&mut f, self.fuel, segment.len() as u64, check);
                for i in segment.drain(..) {
                    f.instruction(&i);
                }
                // A loop's body runs again on every branch back: check there too.
                check = is_loop;
            }
        }
        if !segment.is_empty() {
            Self::charge(&mut f, self.fuel, segment.len() as u64, check);
            for i in segment.drain(..) {
                f.instruction(&i);
            }
        }
        code.function(&f);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
