use super::*;

fn ctx() -> WasiCtx {
    WasiCtx::new("task", &["a".into(), "bc".into()], &[("K".into(), "V".into())], b"hello".to_vec(), 42, 16)
}

#[test]
fn args_and_environ_follow_the_layout() {
    let c = ctx();
    let m = VecMemory::new(256);
    assert_eq!(c.args_sizes_get(&m, 0, 4), Errno::Success);
    assert_eq!(m.read_u32(0).unwrap(), 3);
    assert_eq!(m.read_u32(4).unwrap(), 5 + 2 + 3);
    assert_eq!(c.args_get(&m, 16, 64), Errno::Success);
    assert_eq!(m.read(64, 10).unwrap(), b"task\0a\0bc\0");
    assert_eq!(m.read_u32(20).unwrap(), 69);
    assert_eq!(c.environ_get(&m, 100, 120), Errno::Success);
    assert_eq!(m.read(120, 4).unwrap(), b"K=V\0");
}

#[test]
fn out_of_bounds_pointers_are_efault() {
    let mut c = ctx();
    let m = VecMemory::new(32);
    assert_eq!(c.args_sizes_get(&m, 30, 0), Errno::Fault);
    assert_eq!(c.random_get(&m, 20, 100), Errno::Fault);
    assert_eq!(c.clock_time_get(&m, 0, u32::MAX - 2), Errno::Fault);
}

#[test]
fn stdin_reads_then_reports_eof() {
    let mut c = ctx();
    let m = VecMemory::new(128);
    // one iovec at 0: buf 32, len 3
    m.write_u32(0, 32).unwrap();
    m.write_u32(4, 3).unwrap();
    assert_eq!(c.fd_read(&m, 0, 0, 1, 8), Errno::Success);
    assert_eq!(m.read_u32(8).unwrap(), 3);
    assert_eq!(m.read(32, 3).unwrap(), b"hel");
    assert_eq!(c.fd_read(&m, 0, 0, 1, 8), Errno::Success);
    assert_eq!(m.read_u32(8).unwrap(), 2);
    assert_eq!(c.fd_read(&m, 0, 0, 1, 8), Errno::Success);
    assert_eq!(m.read_u32(8).unwrap(), 0, "end of input");
    assert_eq!(c.fd_read(&m, 1, 0, 1, 8), Errno::Badf);
}

#[test]
fn writes_collect_and_stop_at_the_output_limit() {
    let mut c = ctx();
    let m = VecMemory::new(128);
    m.write(64, b"0123456789").unwrap();
    m.write_u32(0, 64).unwrap();
    m.write_u32(4, 10).unwrap();
    assert_eq!(c.fd_write(&m, 1, 0, 1, 8), Ok(Errno::Success));
    assert_eq!(m.read_u32(8).unwrap(), 10);
    assert_eq!(c.fd_write(&m, 5, 0, 1, 8), Ok(Errno::Badf));
    // 10 + 10 > 16
    assert_eq!(c.fd_write(&m, 2, 0, 1, 8), Err(Abort::OutputLimit(16)));
    assert_eq!(c.stdout, b"0123456789");
    assert!(c.stderr.is_empty());
}

#[test]
fn clocks_and_random_depend_only_on_the_seed() {
    let run = |seed| {
        let mut c = WasiCtx::new("t", &[], &[], vec![], seed, 0);
        let m = VecMemory::new(64);
        c.random_get(&m, 0, 13);
        c.clock_time_get(&m, 1, 16);
        c.clock_time_get(&m, 0, 24);
        m.read(0, 32).unwrap()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1)[..13], run(2)[..13]);
    let mut c = ctx();
    let m = VecMemory::new(64);
    c.clock_time_get(&m, 1, 0);
    c.clock_time_get(&m, 1, 8);
    let (a, b) = (u64::from_le_bytes(m.read(0, 8).unwrap().try_into().unwrap()), u64::from_le_bytes(m.read(8, 8).unwrap().try_into().unwrap()));
    assert!(b > a, "monotonic time advances");
    assert_eq!(c.clock_time_get(&m, 9, 0), Errno::Inval);
}

#[test]
fn exit_is_recorded() {
    let mut c = ctx();
    assert_eq!(c.proc_exit(3), Abort::Exit(3));
    assert_eq!(c.abort, Some(Abort::Exit(3)));
}
