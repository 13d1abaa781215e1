//! Requests on their way to the store and replies on their way back, through the simulated
//! network; the reaper, which runs beside Redis; what the store's side effects set off.

use super::{Event, Peer, World};
use drover_engine::store::{Refusal, Reply, Request};
use rand::Rng as _;

impl World {
    /// An agent put a request on the wire.
    pub(super) fn send_from_machine(&mut self, machine: u32, id: u64, request: Request) {
        if self.cut_off(machine) {
            self.stats.requests_dropped += 1;
            return;
        }
        let at = self.now.plus(self.latency(machine));
        self.queue.schedule(
            at,
            Event::ToStore {
                from: Peer::Machine(machine),
                id,
                request: Box::new(request),
            },
        );
    }

    pub(super) fn on_store_request(&mut self, from: Peer, id: u64, request: Request) {
        self.stats.requests += 1;
        if !self.redis.is_up(self.now) {
            self.stats.requests_dropped += 1;
            return;
        }
        let result = self.redis.store.apply(self.now, request);
        if let (Peer::Machine(m), Ok(Reply::Registered { machine })) = (from, &result) {
            self.by_store_id.insert(*machine, m);
            self.machines[m as usize].store_id = Some(*machine);
        }
        self.store_effects();
        let reply_loss = self.scenario.redis.reply_loss;
        if reply_loss > 0.0 && self.streams.network.random::<f64>() < reply_loss {
            self.stats.replies_lost += 1;
            return;
        }
        match from {
            Peer::Reaper => self.queue.schedule(
                self.now,
                Event::ToPeer {
                    to: from,
                    id,
                    result: Box::new(result),
                },
            ),
            Peer::Machine(m) => {
                if self.cut_off(m) {
                    self.stats.requests_dropped += 1;
                    return;
                }
                let at = self.now.plus(self.latency(m));
                self.queue.schedule(
                    at,
                    Event::ToPeer {
                        to: from,
                        id,
                        result: Box::new(result),
                    },
                );
            }
        }
    }

    pub(super) fn on_reply(&mut self, to: Peer, id: u64, result: Result<Reply, Refusal>) {
        match to {
            Peer::Reaper => {
                self.reaper.handle_reply(self.now, id, result);
                self.pump_reaper();
            }
            Peer::Machine(m) => {
                let now = self.now;
                if let Some(agent) = self.machines[m as usize].agent.as_mut() {
                    agent.handle(now, drover_engine::agent::Input::Reply { id, result });
                    self.process_agent(m);
                }
            }
        }
    }

    /// History to the checker and metrics; wake-ups to the idle machines they name.
    pub(super) fn store_effects(&mut self) {
        self.absorb_history();
        let wakes: Vec<_> = self.redis.store.drain_wakes().collect();
        for store_id in wakes {
            let Some(&m) = self.by_store_id.get(&store_id) else {
                continue;
            };
            if self.machines[m as usize].agent.is_none() || self.cut_off(m) {
                continue;
            }
            let at = self.now.plus(self.latency(m));
            self.queue.schedule(at, Event::Wake { machine: m });
        }
    }

    pub(super) fn on_wake(&mut self, machine: u32) {
        let now = self.now;
        if let Some(agent) = self.machines[machine as usize].agent.as_mut() {
            agent.handle(now, drover_engine::agent::Input::Wake);
            self.process_agent(machine);
        }
    }

    pub(super) fn on_reaper_timer(&mut self) {
        if self.reaper_timer != Some(self.now) {
            return;
        }
        self.reaper_timer = None;
        self.reaper.on_timeout(self.now);
        self.pump_reaper();
    }

    pub(super) fn pump_reaper(&mut self) {
        while let Some((id, request)) = self.reaper.poll_send() {
            self.queue.schedule(
                self.now,
                Event::ToStore {
                    from: Peer::Reaper,
                    id,
                    request: Box::new(request),
                },
            );
        }
        self.rearm_reaper();
    }

    pub(super) fn rearm_reaper(&mut self) {
        let next = self.reaper.next_timeout().max(self.now);
        if self.reaper_timer != Some(next) {
            self.reaper_timer = Some(next);
            self.queue.schedule(next, Event::ReaperTimer);
        }
    }
}
