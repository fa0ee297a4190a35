use super::*;

fn hash(data: &[u8]) -> Sha256Hash {
    Sha256Hash::of(data)
}

/// Runs a whole exchange; returns the asker's outcome and the messages sent.
fn exchange(asked: Sha256Hash, held: Option<Vec<u8>>, limit: u64) -> (Result<Vec<u8>, TransferError>, usize) {
    let req = request(&asked);
    assert_eq!(requested(&req), Ok(asked));
    let mut out = Outgoing::new(held);
    let mut fetch = Fetch::new(asked, limit);
    let mut sent = 0;
    while let Some(msg) = out.next_chunk() {
        assert!(msg.len() <= CHUNK_BYTES + 1, "every message fits a data channel message");
        sent += 1;
        match fetch.on_message(&msg) {
            Ok(Progress::Done(data)) => {
                assert_eq!(out.sent(), data.len(), "the holder counts the blob's bytes");
                assert!(out.finished());
                return (Ok(data), sent);
            }
            Ok(Progress::Pending { received, size }) => {
                assert!(received < size || size == 0);
                assert_eq!(out.sent() as u64, received, "the holder counts what it handed out");
                assert!(!out.finished() || received == size);
            }
            Err(e) => return (Err(e), sent),
        }
    }
    panic!("the holder stopped sending before the blob was complete");
}

#[test]
fn a_blob_arrives_whole_in_chunks_and_verified() {
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (got, sent) = exchange(hash(&blob), Some(blob.clone()), 1 << 20);
    assert_eq!(got, Ok(blob.clone()));
    assert_eq!(sent, 1 + blob.len().div_ceil(CHUNK_BYTES), "a header, then full chunks");
    let (empty, _) = exchange(hash(b""), Some(vec![]), 10);
    assert_eq!(empty, Ok(vec![]));
}

#[test]
fn what_is_not_the_blob_asked_for_is_refused() {
    let blob = vec![5u8; 40_000];
    // The holder sends other bytes under the asked name.
    let (got, _) = exchange(hash(b"something else"), Some(blob.clone()), 1 << 20);
    assert_eq!(got, Err(TransferError::WrongHash));
    let (got, sent) = exchange(hash(&blob), Some(blob.clone()), 39_999);
    assert_eq!(got, Err(TransferError::TooLarge { size: 40_000, limit: 39_999 }));
    assert_eq!(sent, 1, "refused at the header, before any byte is taken");
    let (got, _) = exchange(hash(&blob), None, 1 << 20);
    assert_eq!(got, Err(TransferError::Missing));
}

#[test]
fn malformed_or_misordered_messages_end_the_transfer() {
    let blob = vec![1u8; 100];
    let h = hash(&blob);
    let header = |n: u64| [&[2u8][..], &n.to_le_bytes()].concat();
    let chunk = |n: usize| [&[3u8][..], &vec![1u8; n][..]].concat();
    let fresh = || Fetch::new(h, 1000);
    assert!(matches!(fresh().on_message(&chunk(10)), Err(TransferError::Unexpected(_))), "a chunk before the header");
    assert!(matches!(fresh().on_message(&[2, 1, 2]), Err(TransferError::Unexpected(_))), "a short header");
    assert!(matches!(fresh().on_message(&[]), Err(TransferError::Unexpected(_))));
    assert!(matches!(fresh().on_message(&[9, 9]), Err(TransferError::Unexpected(_))));
    let mut f = fresh();
    f.on_message(&header(100)).unwrap();
    assert!(matches!(f.on_message(&header(100)), Err(TransferError::Unexpected(_))), "a second header");
    let mut f = fresh();
    f.on_message(&header(100)).unwrap();
    assert_eq!(f.on_message(&chunk(60)), Ok(Progress::Pending { received: 60, size: 100 }));
    assert_eq!(f.on_message(&chunk(41)), Err(TransferError::Overrun));
    let mut f = fresh();
    f.on_message(&header(100)).unwrap();
    assert!(matches!(f.on_message(&[3]), Err(TransferError::Unexpected(_))), "an empty chunk");
    assert!(matches!(f.on_message(&chunk(CHUNK_BYTES + 1)), Err(TransferError::Unexpected(_))), "an oversized chunk");
    let mut f = Fetch::new(hash(b"ab"), 1000);
    f.on_message(&header(2)).unwrap();
    assert_eq!(f.on_message(&[3, b'a', b'b']), Ok(Progress::Done(b"ab".to_vec())));
    assert!(matches!(f.on_message(&[3, b'c']), Err(TransferError::Unexpected(_))), "nothing after the end");
    // A header announcing the whole limit reserves little until bytes come.
    let mut f = Fetch::new(h, u64::MAX);
    assert_eq!(f.on_message(&header(1 << 40)), Ok(Progress::Pending { received: 0, size: 1 << 40 }));
    assert!(matches!(requested(&[1, 2, 3]), Err(TransferError::Unexpected(_))));
    assert!(matches!(requested(&header(3)), Err(TransferError::Unexpected(_))));
}
