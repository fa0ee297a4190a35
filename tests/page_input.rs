//! What the agent reads from the page, in a dedicated Worker (where the agent
//! runs): its options, control messages, peer-connection messages (each bad
//! one refused with a message naming the problem), and a data channel
//! relayed over a MessagePort.

#![cfg(target_arch = "wasm32")]

use idlecore_wasm::page::messages::{parse, AgentOptions, Control, PageMessage, Rtc};
use idlecore_wasm::peer_link::{LinkEvent, PeerLink};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

fn js(source: &str) -> JsValue {
    js_sys::eval(&format!("({source})")).expect("valid JavaScript")
}

fn options(source: &str) -> Result<AgentOptions, String> {
    AgentOptions::from_js(&js(source))
}

fn message(source: &str) -> Result<PageMessage, String> {
    parse(&js(source))
}

#[wasm_bindgen_test]
fn options_take_defaults_and_every_field() {
    let o = options("{coordinator: 'ws://h/ws'}").unwrap();
    assert_eq!((o.cpu, o.cores, o.max_workers, o.paused, o.peers, o.agent.as_str()), (0.25, None, None, false, true, ""));
    let o = options(
        "{coordinator: 'wss://h/ws', cpu: 0.5, cores: 8, maxWorkers: 3, agent: 'x', moduleCacheMib: 16, prefetch: 0, paused: true, peers: false}",
    )
    .unwrap();
    assert_eq!((o.cpu, o.cores, o.max_workers, o.module_cache_mib, o.prefetch, o.paused), (0.5, Some(8), Some(3), Some(16), Some(0), true));
    assert!(!o.peers);
    assert!(!o.data_channel, "WebSockets by default");
    assert!(options("{coordinator: 'ws://h/ws', transport: 'webrtc'}").unwrap().data_channel);
}

#[wasm_bindgen_test]
fn bad_options_are_refused_by_name() {
    for (source, why) in [
        ("'ws://h/ws'", "must be an object"),
        ("{}", "`coordinator` is missing"),
        ("{coordinator: 'http://h/'}", "ws:// or wss://"),
        ("{coordinator: 'ws://h', cpu: '1'}", "`cpu` must be a number"),
        ("{coordinator: 'ws://h', cpu: 2}", "`cpu` must be a number from 0 to 1"),
        ("{coordinator: 'ws://h', cpu: NaN}", "`cpu` must be a number from 0 to 1"),
        ("{coordinator: 'ws://h', cores: 1.5}", "`cores` must be a whole number"),
        ("{coordinator: 'ws://h', maxWorkers: -1}", "`maxWorkers` must be a whole number"),
        ("{coordinator: 'ws://h', maxWorkers: 0}", "`maxWorkers` must be between"),
        ("{coordinator: 'ws://h', paused: 1}", "`paused` must be true or false"),
        ("{coordinator: 'ws://h', cpus: 1}", "unknown field `cpus`"),
        ("{coordinator: 'ws://h', transport: 'carrier pigeon'}", "`transport` must be"),
    ] {
        let err = options(source).expect_err(source);
        assert!(err.contains(why), "{source}: {err}");
    }
}

#[wasm_bindgen_test]
fn control_messages_are_read_and_bad_ones_refused() {
    assert!(matches!(message("{cmd: 'pause'}"), Ok(PageMessage::Control(Control::Pause))));
    assert!(matches!(message("{cmd: 'resume'}"), Ok(PageMessage::Control(Control::Resume))));
    assert!(matches!(message("{cmd: 'cpu', cpu: 0.75}"), Ok(PageMessage::Control(Control::Cpu { cpu })) if cpu == 0.75));
    for (source, why) in [
        ("null", "not an object"),
        ("{}", "`cmd` is missing"),
        ("{cmd: 'stop'}", "unknown cmd \"stop\""),
        ("{cmd: 'pause', now: true}", "unknown field `now`"),
        ("{cmd: 'cpu'}", "`cpu` is missing"),
        ("{cmd: 'cpu', cpu: 1.5}", "from 0 to 1"),
    ] {
        let err = message(source).expect_err(source);
        assert!(err.contains(why), "{source}: {err}");
    }
}

#[wasm_bindgen_test]
fn peer_messages_are_read_and_bad_ones_refused() {
    match message("{cmd: 'rtc', op: 'candidate', peer: '12', candidate: 'candidate:1 1 udp 1 10.0.0.1 9 typ host', mid: '0', mline: 0}") {
        Ok(PageMessage::Rtc(Rtc::Candidate { peer, mline: 0, mid, .. })) => assert_eq!((peer.as_str(), mid.as_str()), ("12", "0")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(message("{cmd: 'rtc', op: 'offer', peer: '3', sdp: 'v=0'}"), Ok(PageMessage::Rtc(Rtc::Offer { .. }))));
    assert!(matches!(message("{cmd: 'rtc', op: 'closed', peer: '3', why: 'gone'}"), Ok(PageMessage::Rtc(Rtc::Closed { .. }))));
    assert!(
        matches!(message("{cmd: 'rtc', peer: '7.2', channel: new MessageChannel().port1}"), Ok(PageMessage::Channel(k, _)) if k == "7.2")
    );
    for (source, why) in [
        ("{cmd: 'rtc', op: 'offer', sdp: 'v=0'}", "`peer` is missing"),
        ("{cmd: 'rtc', op: 'offer', peer: '3'}", "`sdp` is missing"),
        ("{cmd: 'rtc', op: 'offer', peer: 3, sdp: 'v=0'}", "`peer` must be a string"),
        ("{cmd: 'rtc', op: 'candidate', peer: '3', candidate: 'c', mid: '0', mline: -1}", "`mline` must be a whole number"),
        ("{cmd: 'rtc', op: 'dance', peer: '3'}", "unknown op \"dance\""),
    ] {
        let err = message(source).expect_err(source);
        assert!(err.contains(why), "{source}: {err}");
    }
}

/// The page's side of a relayed channel is `port1`; the agent's link has `port2`.
#[wasm_bindgen_test]
async fn a_relayed_channel_carries_bytes_both_ways_with_flow_control() {
    let channel = web_sys::MessageChannel::new().unwrap();
    let seen = Rc::new(RefCell::new(Vec::<String>::new()));
    let s = seen.clone();
    let link = PeerLink::new(
        &channel.port2().into(),
        Rc::new(move |e| {
            s.borrow_mut().push(match e {
                LinkEvent::Open => "open".into(),
                LinkEvent::Data(bytes) => format!("data {bytes:?}"),
                LinkEvent::Drain => "drain".into(),
                LinkEvent::Closed => "closed".into(),
            })
        }),
    )
    .unwrap();
    // What the agent sends arrives at the page's end as an ArrayBuffer.
    let got = Rc::new(RefCell::new(Vec::<Vec<u8>>::new()));
    let g = got.clone();
    let on_page = wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
        g.borrow_mut().push(js_sys::Uint8Array::new(&e.data()).to_vec());
    });
    channel.port1().set_onmessage(Some(wasm_bindgen::JsCast::unchecked_ref(on_page.as_ref())));

    let page = channel.port1();
    page.post_message(&"open".into()).unwrap();
    page.post_message(&js_sys::Uint8Array::from(&[1u8, 2, 3][..]).buffer()).unwrap();
    link.send(&[9; 100]).unwrap();
    link.send(&[8; 50]).unwrap();
    assert_eq!(link.buffered(), 150.0, "sent, and not yet reported drained");
    page.post_message(&JsValue::from(120)).unwrap();
    gloo_timers::future::TimeoutFuture::new(50).await;
    assert_eq!(*seen.borrow(), ["open", "data [1, 2, 3]", "drain"]);
    assert_eq!(link.buffered(), 30.0, "150 handed over, 120 of them sent");
    assert_eq!(*got.borrow(), [vec![9; 100], vec![8; 50]]);
    drop(link);
    page.post_message(&"open".into()).unwrap();
    gloo_timers::future::TimeoutFuture::new(50).await;
    assert_eq!(seen.borrow().len(), 3, "a dropped link hears nothing more");
}

#[wasm_bindgen_test]
fn the_data_channel_endpoint_sits_beside_the_worker_socket() {
    use idlecore_wasm::transport::rtc_endpoint;
    assert_eq!(rtc_endpoint("ws://127.0.0.1:8080/ws").unwrap(), "http://127.0.0.1:8080/rtc");
    assert_eq!(rtc_endpoint("wss://example.org/idle/ws?site=blog").unwrap(), "https://example.org/idle/rtc?site=blog");
    assert!(rtc_endpoint("not a url").is_err());
}
