"""An agent's flow, frozen into a production line (README.md beside this folder says how).

    python app/host.py -w examples/agent_line -p 9080

A person once asked an agent for a digest: it ran a command to collect the day's topics,
delegated the research of each topic to a sub-agent, asked the person before sending, and
posted the digest to a web hook.  Here the same flow is step definitions only — the
built-in step types run it, no handler is written — for every tenant, as often as wanted:

    collect (shell) -> research_1, research_2 (delegate: a sub-line per topic)
                    -> approve (approval) -> deliver (http)

conf/config.json turns on what the host must allow: ``pipeline_service.shell_root`` (the
directory shell steps run under) and ``pipeline_service.http_allow`` (where http steps may go).
"""
from ahserver.configuredServer import add_startup
from ahserver.serverenv import ServerEnv
from ahserver.webapp import webapp

import pipeline_service
from pipeline_service.init import load_pipeline_service

RESEARCH_LINE = "topic-research"
AGENT_LINE = "agent-digest"

# the sub-line one topic gets (the sub-agent's work): notes on the topic, from a command
TOPIC_RESEARCH = [
    {"step_name": "notes", "step_type": "shell",
     "config": {"command": "printf 'notes on %s (%s letters)\\n' {{ params.topic }} {{ params.topic | length }}",
                "timeout": 30}},
]

# the agent's run, frozen
DIGEST = [
    # terminal: the command the agent ran to gather the day's topics (its last line is JSON)
    {"step_name": "collect", "step_type": "shell",
     "config": {"command": "printf '{\"topics\": [\"%s\", \"%s\"], \"collected_at\": \"%s\"}\\n' "
                           "{{ params.first }} {{ params.second }} \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"",
                "parse_json": True, "timeout": 30}},
    # delegate_task: a sub-line per topic, waiting without a worker slot until it ends
    {"step_name": "research_1", "step_type": "delegate", "depends_on": ["collect"],
     "config": {"pipeline_id": RESEARCH_LINE, "title": "research: {{ upstream.collect.json.topics[0] }}",
                "params": {"topic": "{{ upstream.collect.json.topics[0] }}"}}},
    {"step_name": "research_2", "step_type": "delegate", "depends_on": ["collect"],
     "config": {"pipeline_id": RESEARCH_LINE, "title": "research: {{ upstream.collect.json.topics[1] }}",
                "params": {"topic": "{{ upstream.collect.json.topics[1] }}"},
                "when": "upstream.collect.json.topics[1] != ''"}},
    # the agent asked the person before sending: a person decides, through the signal endpoint
    # (a step sees the outputs of the steps it depends on: collect is named for its topics)
    {"step_name": "approve", "step_type": "approval", "depends_on": ["collect", "research_1", "research_2"],
     "config": {"prompt": "Send the digest on {{ upstream.collect.json.topics | join(', ') }}?",
                "timeout": 86400, "on_timeout": "reject", "on_reject": "fail"}},
    # the agent's web request: the digest, posted to the tenant's web hook
    {"step_name": "deliver", "step_type": "http", "depends_on": ["collect", "research_1", "research_2", "approve"],
     "config": {"method": "POST", "url": "{{ params.deliver_to }}", "timeout": 30,
                "json": {"topics": "{{ upstream.collect.json.topics }}",
                         "approved_by": "{{ upstream.approve.actor }}",
                         "notes": ["{{ upstream.research_1.outputs.notes.stdout }}",
                                   "{{ upstream.research_2.outputs.notes.stdout if upstream.research_2 else '' }}"]}}},
]


def get_module_dbname(module):
    return "pipeline"  # the key of conf/config.json 'databases'


async def prepare(app):
    """At start-up: the tables (never dropped) and the two lines' definitions."""
    service = pipeline_service.get_service()
    await service.storage.create_missing_tables(include_reference=True)
    await service.define_pipeline(RESEARCH_LINE, TOPIC_RESEARCH, name="research one topic")
    await service.define_pipeline(AGENT_LINE, DIGEST, name="the daily digest, frozen from an agent run")


def init():
    env = ServerEnv()
    env.get_module_dbname = get_module_dbname
    load_pipeline_service()  # the built-in step types come with it: no handler to register
    add_startup(prepare)


if __name__ == "__main__":
    webapp(init)
