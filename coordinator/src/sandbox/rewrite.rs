//! The rewrite: every function body metered, `memory.size` and `memory.grow`
//! virtualised, and the added globals, functions and exports appended to
//! their sections (or written as new sections where the module has none).

use super::shape::Shape;
use super::{FUEL_EXPORT, MEMORY_CAP_EXPORT, MEMORY_DENIED_EXPORT, RESET_EXPORT};
use wasm_encoder::reencode::{Error as ReencodeError, Reencode, RoundtripReencoder};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, DataCountSection, DataSection, ExportKind, ExportSection, Function, FunctionSection, GlobalSection,
    GlobalType, Instruction, Module, SectionId, TypeSection, ValType,
};
use wasmparser::Operator;

/// The sections this pass extends or may have to add, in module order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Extended {
    Type,
    Function,
    Global,
    Export,
    DataCount,
    Code,
}

const EXTENDED: [(Extended, SectionId); 6] = [
    (Extended::Type, SectionId::Type),
    (Extended::Function, SectionId::Function),
    (Extended::Global, SectionId::Global),
    (Extended::Export, SectionId::Export),
    (Extended::DataCount, SectionId::DataCount),
    (Extended::Code, SectionId::Code),
];

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

pub struct Instrumenter<'s, 'a> {
    shape: &'s Shape<'a>,
    grow_type: u32,
    reset_type: u32,
    grow_func: u32,
    reset_func: u32,
    fuel: u32,
    cap: u32,
    denied: u32,
    pages: u32,
    /// Sections written so far (by `Extended` discriminant).
    done: [bool; 6],
}

impl<'s, 'a> Instrumenter<'s, 'a> {
    pub fn new(shape: &'s Shape<'a>) -> Self {
        let funcs = shape.imported_funcs + shape.defined_funcs;
        let globals = shape.imported_globals + shape.defined_globals;
        let mut done = [false; 6];
        // A data count section is only needed for `memory.init` in the reset.
        let needs_data_count = shape.resettable() && !shape.data.is_empty() && !shape.has_data_count;
        done[Extended::DataCount as usize] = !needs_data_count;
        Instrumenter {
            shape,
            grow_type: shape.types,
            reset_type: shape.types + 1,
            grow_func: funcs,
            reset_func: funcs + 1,
            fuel: globals,
            cap: globals + 1,
            denied: globals + 2,
            pages: globals + 3,
            done,
        }
    }

    // The `extend_*` methods append this pass's entries to a section.
    fn extend_types(&self, types: &mut TypeSection) {
        types.ty().function([ValType::I32], [ValType::I32]);
        types.ty().function([ValType::I32], []);
    }
    fn extend_functions(&self, funcs: &mut FunctionSection) {
        funcs.function(self.grow_type);
        if self.shape.resettable() {
            funcs.function(self.reset_type);
        }
    }
    fn extend_globals(&self, globals: &mut GlobalSection) {
        let ty = |val_type| GlobalType { val_type, mutable: true, shared: false };
        globals.global(ty(ValType::I64), &ConstExpr::i64_const(i64::MAX));
        globals.global(ty(ValType::I32), &ConstExpr::i32_const(65536));
        globals.global(ty(ValType::I32), &ConstExpr::i32_const(0));
        globals.global(ty(ValType::I32), &ConstExpr::i32_const(self.shape.initial_pages as i32));
    }
    fn extend_exports(&self, exports: &mut ExportSection) {
        exports.export(FUEL_EXPORT, ExportKind::Global, self.fuel);
        exports.export(MEMORY_CAP_EXPORT, ExportKind::Global, self.cap);
        exports.export(MEMORY_DENIED_EXPORT, ExportKind::Global, self.denied);
        if self.shape.resettable() {
            exports.export(RESET_EXPORT, ExportKind::Func, self.reset_func);
        }
    }
    fn extend_code(&self, code: &mut CodeSection) {
        code.function(&self.grow());
        if self.shape.resettable() {
            code.function(&self.reset());
        }
    }

    /// `grow(delta)`: refuses past the cap (setting `denied`), grows the real
    /// memory only beyond its current size, and returns the old `pages`, as
    /// `memory.grow` returns the old size. Sizes are added in 64 bits.
    fn grow(&self) -> Function {
        use Instruction::*;
        let mut f = Function::new([(1, ValType::I64)]);
        let new = 1;
        for i in [
            GlobalGet(self.pages),
            I64ExtendI32U,
            LocalGet(0),
            I64ExtendI32U,
            I64Add,
            LocalTee(new),
            GlobalGet(self.cap),
            I64ExtendI32U,
            I64GtU,
            If(BlockType::Result(ValType::I32)),
            I32Const(1),
            GlobalSet(self.denied),
            I32Const(-1),
            Else,
            // Grow the real memory if the new size does not fit in it.
            LocalGet(new),
            MemorySize(0),
            I64ExtendI32U,
            I64GtU,
            If(BlockType::Result(ValType::I32)),
            LocalGet(new),
            I32WrapI64,
            MemorySize(0),
            I32Sub,
            MemoryGrow(0),
            I32Const(-1),
            I32Eq,
            Else,
            I32Const(0),
            End,
            If(BlockType::Result(ValType::I32)),
            I32Const(-1),
            Else,
            GlobalGet(self.pages),
            LocalGet(new),
            I32WrapI64,
            GlobalSet(self.pages),
            End,
            End,
            End,
        ] {
            f.instruction(&i);
        }
        f
    }

    /// `reset(fresh)`: see the module docs. A new instance's memory is already
    /// zero; zeroing it again would fault in every page for nothing.
    fn reset(&self) -> Function {
        use Instruction::*;
        let mut f = Function::new([]);
        for i in [LocalGet(0), I32Eqz, If(BlockType::Empty), I32Const(0), I32Const(0), MemorySize(0), I32Const(16), I32Shl] {
            f.instruction(&i);
        }
        f.instruction(&MemoryFill(0));
        f.instruction(&End);
        for (index, segment) in self.shape.data.iter().enumerate() {
            let Some(segment) = segment else { continue };
            for i in &segment.offset {
                f.instruction(i);
            }
            f.instruction(&I32Const(0));
            f.instruction(&I32Const(segment.len as i32));
            f.instruction(&MemoryInit { mem: 0, data_index: index as u32 });
        }
        for (index, init) in &self.shape.mutable_globals {
            for i in init {
                f.instruction(i);
            }
            f.instruction(&GlobalSet(*index));
        }
        for i in [I32Const(self.shape.initial_pages as i32), GlobalSet(self.pages), I32Const(0), GlobalSet(self.denied), End] {
            f.instruction(&i);
        }
        f
    }

    /// Writes a section of kind `which` that the module lacks, with only our entries.
    fn emit_missing(&mut self, module: &mut Module, which: Extended) {
        if std::mem::replace(&mut self.done[which as usize], true) {
            return;
        }
        match which {
            Extended::Type => module.section(&with(TypeSection::new(), |s| self.extend_types(s))),
            Extended::Function => module.section(&with(FunctionSection::new(), |s| self.extend_functions(s))),
            Extended::Global => module.section(&with(GlobalSection::new(), |s| self.extend_globals(s))),
            Extended::Export => module.section(&with(ExportSection::new(), |s| self.extend_exports(s))),
            Extended::DataCount => module.section(&DataCountSection { count: self.shape.data.len() as u32 }),
            Extended::Code => module.section(&with(CodeSection::new(), |s| self.extend_code(s))),
        };
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
            f.instruction(&Instruction::If(BlockType::Empty));
            f.instruction(&Instruction::Unreachable);
            f.instruction(&Instruction::End);
        }
    }
}

fn with<S>(mut section: S, fill: impl FnOnce(&mut S)) -> S {
    fill(&mut section);
    section
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

impl Reencode for Instrumenter<'_, '_> {
    type Error = std::convert::Infallible;

    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        let next = before.map(rank).unwrap_or(u8::MAX);
        for (which, id) in EXTENDED {
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
        self.extend_types(types);
        self.done[Extended::Type as usize] = true;
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        funcs: &mut FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        RoundtripReencoder.parse_function_section(funcs, section)?;
        self.extend_functions(funcs);
        self.done[Extended::Function as usize] = true;
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        RoundtripReencoder.parse_global_section(globals, section)?;
        self.extend_globals(globals);
        self.done[Extended::Global as usize] = true;
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        RoundtripReencoder.parse_export_section(exports, section)?;
        self.extend_exports(exports);
        self.done[Extended::Export as usize] = true;
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
        self.extend_code(code);
        self.done[Extended::Code as usize] = true;
        Ok(())
    }

    /// A resettable module's active segments become passive: its reset copies them in.
    fn parse_data(&mut self, data: &mut DataSection, datum: wasmparser::Data<'_>) -> Result<(), ReencodeError<Self::Error>> {
        match datum.kind {
            wasmparser::DataKind::Active { .. } if self.shape.resettable() => {
                data.passive(datum.data.iter().copied());
                Ok(())
            }
            _ => RoundtripReencoder.parse_data(data, datum),
        }
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
                Operator::MemorySize { mem: 0 } => Instruction::GlobalGet(self.pages),
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
