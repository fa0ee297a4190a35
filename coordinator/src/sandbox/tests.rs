//! The instrumented modules, run in a native interpreter (wasmi).

use super::*;
use wasmi::{Engine, Linker, Module as WModule, Store, Val};

fn wat(src: &str) -> Vec<u8> {
    wat::parse_str(src).expect("test module parses")
}

/// Runs `_start` of the instrumented module with `fuel` and a memory cap.
/// Returns (trapped, fuel left, the module's exported `result` global if any).
fn run(wasm: &[u8], fuel: i64, cap_pages: i32) -> (bool, i64, Option<i32>) {
    let sandboxed = instrument(wasm).expect("instruments");
    let engine = Engine::default();
    let module = WModule::new(&engine, &sandboxed[..]).expect("compiles");
    let mut store = Store::new(&engine, ());
    let instance = Linker::<()>::new(&engine).instantiate_and_start(&mut store, &module).expect("instantiates");
    instance.get_global(&store, FUEL_EXPORT).unwrap().set(&mut store, Val::I64(fuel)).unwrap();
    instance.get_global(&store, MEMORY_CAP_EXPORT).unwrap().set(&mut store, Val::I32(cap_pages)).unwrap();
    let start = instance.get_typed_func::<(), ()>(&store, "_start").unwrap();
    let trapped = start.call(&mut store, ()).is_err();
    let left = match instance.get_global(&store, FUEL_EXPORT).unwrap().get(&store) {
        Val::I64(v) => v,
        other => panic!("fuel is {other:?}"),
    };
    let result = instance.get_global(&store, "result").map(|g| match g.get(&store) {
        Val::I32(v) => v,
        other => panic!("result is {other:?}"),
    });
    (trapped, left, result)
}

#[test]
fn straight_line_code_is_charged_one_per_instruction() {
    let m = wat(r#"(module (memory (export "memory") 1)
        (func (export "_start") i32.const 1 drop nop))"#);
    // i32.const, drop, nop, end
    assert_eq!(run(&m, 100, 10), (false, 96, None));
}

#[test]
fn a_runaway_loop_stops_at_the_same_point_every_time() {
    let m = wat(r#"(module (memory (export "memory") 1)
        (global (export "result") (mut i32) (i32.const 0))
        (func (export "_start")
          (loop $l
            global.get 0 i32.const 1 i32.add global.set 0
            br $l)))"#);
    let first = run(&m, 10_000, 10);
    assert!(first.0, "the loop is stopped");
    assert!(first.1 < 0, "by running out of fuel");
    assert_eq!(run(&m, 10_000, 10), first, "deterministically");
    // Each iteration costs the 5 instructions of the loop body; the loop ran
    // until the budget went negative.
    let iterations = first.2.unwrap();
    assert!((1990..=2000).contains(&iterations), "{iterations} iterations for 10000 fuel");
    let more = run(&m, 20_000, 10).2.unwrap();
    assert!((more - 2 * iterations).abs() <= 2, "fuel buys iterations linearly");
}

#[test]
fn calls_and_branches_are_all_charged() {
    let m = wat(r#"(module (memory (export "memory") 1)
        (global (export "result") (mut i32) (i32.const 0))
        (func $inc global.get 0 i32.const 1 i32.add global.set 0)
        (func (export "_start")
          (block $out
            (loop $l
              call $inc
              global.get 0 i32.const 10 i32.ge_u br_if $out
              br $l))))"#);
    let (trapped, left, result) = run(&m, 1_000_000, 10);
    assert!(!trapped);
    assert_eq!(result, Some(10));
    let used = 1_000_000 - left;
    // $inc: 5 instructions, 10 calls. _start: block and loop once; per
    // iteration `call` and the 4 up to `br_if`; `br` on the 9 iterations
    // that go round; the final `end`. The ends of the loop and of the block
    // are jumped over, never executed, so never charged.
    assert_eq!(used, 10 * 5 + 2 + 10 * (1 + 4) + 9 + 1);
}

#[test]
fn memory_grow_fails_past_the_cap() {
    let m = wat(r#"(module (memory (export "memory") 1)
        (global (export "result") (mut i32) (i32.const 0))
        (func (export "_start")
          i32.const 1 memory.grow drop
          i32.const 5 memory.grow global.set 0))"#);
    assert_eq!(run(&m, 1000, 2).2, Some(-1), "1 + 1 + 5 pages is over a cap of 2");
    assert_eq!(run(&m, 1000, 7).2, Some(2), "within the cap, grow returns the old size");
    let denied = |cap| {
        let sandboxed = instrument(&m).unwrap();
        let engine = Engine::default();
        let module = WModule::new(&engine, &sandboxed[..]).unwrap();
        let mut store = Store::new(&engine, ());
        let instance = Linker::<()>::new(&engine).instantiate_and_start(&mut store, &module).unwrap();
        instance.get_global(&store, MEMORY_CAP_EXPORT).unwrap().set(&mut store, Val::I32(cap)).unwrap();
        instance.get_typed_func::<(), ()>(&store, "_start").unwrap().call(&mut store, ()).unwrap();
        instance.get_global(&store, MEMORY_DENIED_EXPORT).unwrap().get(&store)
    };
    assert!(matches!(denied(2), Val::I32(1)));
    assert!(matches!(denied(7), Val::I32(0)));
}

#[test]
fn modules_missing_sections_get_them_in_order() {
    // No type, global or export sections of its own except the memory export.
    let m = wat(r#"(module (memory 1) (export "memory" (memory 0)))"#);
    let out = instrument(&m).unwrap();
    let mut ids = vec![];
    for p in Parser::new(0).parse_all(&out) {
        if let Some((id, _)) = p.unwrap().as_section() {
            ids.push(id);
        }
    }
    assert_eq!(ids, vec![1, 3, 5, 6, 7, 10], "type, function, memory, global, export, code");
}

#[test]
fn unsupported_modules_are_refused_with_a_reason() {
    let bad: [(&[u8], &str); 2] = [(b"\0asm\x01\0\0\0\xff", "not a valid"), (b"\0asm\x0d\0\x01\0", "components")];
    for (bytes, want) in bad {
        let e = instrument(bytes).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    let cases = [
        (r#"(module)"#, "0 memories"),
        (r#"(module (import "env" "memory" (memory 1)))"#, "imports a memory"),
        (r#"(module (memory 1) (func (export "idlecore_fuel")))"#, "reserved"),
    ];
    for (src, want) in cases {
        let e = instrument(&wat(src)).unwrap_err().to_string();
        assert!(e.contains(want), "{src}: {e}");
    }
}

/// A module whose run leaves traces everywhere a reset must clean: it bumps
/// a mutable global, overwrites its data segment, grows memory and writes to
/// the new page, and records what it saw on entry in `result`.
const STATEFUL: &str = r#"(module
    (memory (export "memory") 1)
    (global $counter (mut i32) (i32.const 5))
    (global (export "result") (mut i32) (i32.const 0))
    (data (i32.const 16) "abc")
    (func (export "_start")
      ;; result = counter * 1000000 + byte[16] * 1000 + memory.size * 10 + byte[65536 + 8]-if-present
      global.get $counter i32.const 1000000 i32.mul
      i32.const 16 i32.load8_u i32.const 1000 i32.mul i32.add
      memory.size i32.const 10 i32.mul i32.add
      global.set 1
      global.get $counter i32.const 1 i32.add global.set $counter
      i32.const 16 i32.const 122 i32.store8
      i32.const 2 memory.grow drop
      i32.const 65544 i32.const 7 i32.store8))"#;

struct Instance {
    store: Store<()>,
    instance: wasmi::Instance,
}

impl Instance {
    fn new(sandboxed: &[u8]) -> Instance {
        let engine = Engine::default();
        let module = WModule::new(&engine, sandboxed).expect("compiles");
        let mut store = Store::new(&engine, ());
        let instance = Linker::<()>::new(&engine).instantiate_and_start(&mut store, &module).expect("instantiates");
        Instance { store, instance }
    }
    fn reset(&mut self, fresh: bool) {
        let reset = self.instance.get_typed_func::<i32, ()>(&self.store, RESET_EXPORT).expect("exports reset");
        reset.call(&mut self.store, fresh as i32).expect("reset runs");
    }
    /// Runs `_start` with plenty of fuel; returns (fuel used, `result`).
    fn start(&mut self) -> (i64, i32) {
        let fuel = self.instance.get_global(&self.store, FUEL_EXPORT).unwrap();
        fuel.set(&mut self.store, Val::I64(1_000_000)).unwrap();
        self.instance.get_typed_func::<(), ()>(&self.store, "_start").unwrap().call(&mut self.store, ()).expect("runs");
        let Val::I64(left) = fuel.get(&self.store) else { panic!("fuel is i64") };
        let Val::I32(result) = self.instance.get_global(&self.store, "result").unwrap().get(&self.store) else { panic!("result is i32") };
        (1_000_000 - left, result)
    }
    fn memory(&self) -> Vec<u8> {
        self.instance.get_memory(&self.store, "memory").unwrap().data(&self.store).to_vec()
    }
}

#[test]
fn a_reset_instance_runs_exactly_like_a_new_one() {
    let sandboxed = instrument(&wat(STATEFUL)).unwrap();
    let mut fresh = Instance::new(&sandboxed);
    fresh.reset(true);
    let before = fresh.memory();
    assert_eq!(&before[16..19], b"abc", "the reset of a new instance copies the data in");
    let first = fresh.start();
    assert_eq!(first.1, 5_000_000 + 97_000 + 10, "counter 5, byte 'a', 1 page");
    assert_eq!(fresh.memory().len(), 3 * 65536);

    for _ in 0..3 {
        fresh.reset(false);
        let memory = fresh.memory();
        assert_eq!(memory.len(), 3 * 65536, "real memory never shrinks");
        assert_eq!(&memory[..65536], &before[..], "the first page is as new");
        assert!(memory[65536..].iter().all(|b| *b == 0), "grown pages are zeroed");
        assert_eq!(fresh.start(), first, "same view of memory, globals and size; same fuel");
    }
}

#[test]
fn growth_within_the_real_memory_does_not_grow_it_again() {
    let m = wat(r#"(module (memory (export "memory") 1)
        (global (export "result") (mut i32) (i32.const 0))
        (func (export "_start")
          i32.const 3 memory.grow drop
          memory.size global.set 0))"#);
    let sandboxed = instrument(&m).unwrap();
    let mut i = Instance::new(&sandboxed);
    i.reset(true);
    assert_eq!(i.start().1, 4);
    for _ in 0..3 {
        i.reset(false);
        assert_eq!(i.start().1, 4, "the task sees 1 + 3 pages each time");
        assert_eq!(i.memory().len(), 4 * 65536, "and the real memory stays at 4");
    }
}

#[test]
fn modules_whose_state_cannot_be_restored_are_not_resettable() {
    let cases = [
        r#"(module (memory (export "memory") 1) (func $s) (start $s) (func (export "_start")))"#,
        r#"(module (memory (export "memory") 1) (table 1 funcref)
            (func (export "_start") i32.const 0 ref.null func table.set 0))"#,
        r#"(module (memory (export "memory") 1) (data "xy")
            (func (export "_start") i32.const 0 i32.const 0 i32.const 2 memory.init 0))"#,
    ];
    for src in cases {
        let sandboxed = instrument(&wat(src)).unwrap();
        let i = Instance::new(&sandboxed);
        assert!(i.instance.get_export(&i.store, RESET_EXPORT).is_none(), "{src}");
    }
    // Their data segments stay active.
    let m = wat(r#"(module (memory (export "memory") 1) (func $s) (start $s) (data (i32.const 4) "hi")
        (func (export "_start")))"#);
    let i = Instance::new(&instrument(&m).unwrap());
    assert_eq!(&i.memory()[4..6], b"hi");
}
