use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use burn_communication::{CommunicationChannel, Message, Protocol, ProtocolClient};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, RwLock};

use crate::{NodeId, node::base::NodeState};

/// Handles the status of sync requests from other nodes
pub(crate) struct SyncService<P: Protocol> {
    /// Current node's state, shared with the thread that does aggregations
    node_state: Arc<RwLock<Option<NodeState>>>,
    /// ovseg patch: which nodes have reached each round's barrier. The original kept one list
    /// that was never emptied (it cleared a copy), so every sync after the first waited forever.
    arrived: Mutex<HashMap<u64, Vec<NodeId>>>,
    /// This node's next round: every node syncs once per global operation, in the same order.
    next_round: AtomicU64,
    /// Notification on each incoming sync request
    sync_notif: Notify,

    _p: PhantomData<P>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SyncRequest(NodeId, u64);

impl<P: Protocol> SyncService<P> {
    pub fn new(node_state: Arc<RwLock<Option<NodeState>>>) -> Self {
        Self {
            node_state,
            arrived: Mutex::new(HashMap::new()),
            next_round: AtomicU64::new(0),
            sync_notif: Notify::new(),
            _p: PhantomData,
        }
    }

    fn arrive(&self, round: u64, peer: NodeId) {
        let mut arrived = self.arrived.lock().unwrap();
        arrived.entry(round).or_default().push(peer);
    }

    /// Sync with all peers.
    pub async fn sync(&self) {
        // we can't sync while we register
        let node_state = self.node_state.read().await;
        let node_state = node_state
            .as_ref()
            .expect("Trying to sync a node before having registered to the orchestrator");

        // this peer is syncing
        let round = self.next_round.fetch_add(1, Ordering::SeqCst);
        self.arrive(round, node_state.node_id);
        for (id, addr) in &node_state.nodes {
            if *id == node_state.node_id {
                continue;
            }

            let mut connection = P::Client::connect(addr.clone(), "sync")
                .await
                .expect("Couldn't connect to peer for sync");
            let msg = SyncRequest(node_state.node_id, round);
            let sync_bytes = rmp_serde::to_vec(&msg).unwrap();
            connection
                .send(Message::new(sync_bytes.into()))
                .await
                .expect("Peer closed connection unexpectedly");
        }
        loop {
            // Listen before looking, so a request arriving in between still wakes us.
            let mut notified = std::pin::pin!(self.sync_notif.notified());
            notified.as_mut().enable();
            {
                let mut arrived = self.arrived.lock().unwrap();
                let count = arrived.get(&round).map_or(0, |nodes| nodes.len());
                if count == node_state.nodes.len() {
                    // all nodes have synced
                    arrived.remove(&round);
                    return;
                }
            }
            // Wait for the next sync to come in
            notified.await
        }
    }

    pub async fn handle_sync_connection<C: CommunicationChannel>(&self, mut channel: C) {
        let msg = channel.recv().await.unwrap();
        let Some(msg) = msg else {
            return;
        };

        let msg = rmp_serde::from_slice::<SyncRequest>(&msg.data).unwrap();

        self.arrive(msg.1, msg.0);

        self.sync_notif.notify_waiters();
    }
}
