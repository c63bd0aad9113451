"""Example 1 -- a scheduled LLM step: every morning, turn yesterday's support tickets into a digest.

The shape of most production LLM tasks::

    gather_tickets  ->  summarise (OpenRouterChatOperator)  ->  publish_digest
    (plain Python)      (.j2 prompt + pydantic schema)          (uses validated fields)

* ``gather_tickets`` collects the records. Here it reads the sample tickets shipped in ``data/tickets``;
  in production it would query your ticketing system or warehouse for the run's data interval.
* ``summarise`` renders ``prompts/daily_digest.j2`` with those records and asks for a reply that must
  match the ``DailyDigest`` schema. The operator validates the reply (and asks the model to repair an
  invalid one) before anything downstream sees it, so downstream code can index fields without guessing.
* ``publish_digest`` consumes the validated dict -- here it formats a chat message and logs the cost.

Run it without a key: ``make demo`` style, against the emulator (see the README, "Offline testing").
"""

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, task
from pydantic import BaseModel, Field

from airflow_openrouter.operators.chat import OpenRouterChatOperator

# Any OpenRouter model id works; this one is cheap and supports structured outputs.
MODEL = "openai/gpt-4o-mini"
TICKETS_DIR = Path(__file__).parent / "data" / "tickets"


# The schema of the answer. The operator sends it as a strict JSON schema and validates the reply
# against it; the task's XCom is the validated data as a plain dict (``model_dump(mode="json")``).
class Theme(BaseModel):
    title: str = Field(description="A few words naming the theme")
    ticket_ids: list[str] = Field(description="The tickets this theme covers")


class DailyDigest(BaseModel):
    headline: str
    themes: list[Theme]
    needs_reply_today: list[str] = Field(description="Ticket ids that cannot wait until tomorrow")
    can_close: list[str] = Field(description="Ticket ids that need no further reply")


with DAG(
    dag_id="example_openrouter_daily_digest",
    description="Summarise the day's support tickets into a validated digest",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,  # an LLM call costs money: don't backfill a month by accident
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["openrouter", "example"],
) as dag:

    @task
    def gather_tickets() -> list[dict]:
        """The day's records: small dicts, because they travel through XCom to the prompt."""
        tickets = []
        for path in sorted(TICKETS_DIR.glob("ticket_*.md")):
            title, _, rest = path.read_text(encoding="utf-8").partition("\n\n")
            header, _, body = rest.partition("\n\n")
            fields = dict(line[2:].split(": ", 1) for line in header.splitlines())  # "- Key: value"
            ticket_id, _, subject = title.removeprefix("# Ticket ").partition(": ")
            tickets.append(
                {
                    "id": ticket_id,
                    "subject": subject,
                    "customer": fields["Customer"],
                    "channel": fields["Channel"],
                    "opened": fields["Opened"],
                    "body": body.strip(),
                }
            )
        return tickets

    summarise = OpenRouterChatOperator(
        task_id="summarise",
        model=MODEL,
        system_prompt="You are the support team lead of Ledgerly, an invoicing app. Be factual and brief.",
        # A file name ending in .j2 is loaded from the DAG folder (or template_searchpath).
        prompt="prompts/daily_digest.j2",
        prompt_vars={
            # An XComArg: resolved at run time, then inserted into the prompt as data.
            "tickets": gather_tickets(),
            # Not ``ds``: runs triggered from the UI or the API have no logical date, so ``ds`` is
            # undefined in them. ``dag_run.run_after`` exists in every run.
            "day": "{{ dag_run.run_after.strftime('%A %d %B %Y') }}",
        },
        response_format=DailyDigest,
        max_repair_attempts=1,  # one chance to fix an invalid reply, then the task fails (and retries)
        temperature=0.2,
        max_tokens=800,
    )

    @task
    def publish_digest(digest: dict, ti=None) -> str:
        """Downstream code gets a dict that already passed validation: index it directly."""
        lines = [f"*{digest['headline']}*", ""]
        lines += [f"- {theme['title']} ({', '.join(theme['ticket_ids'])})" for theme in digest["themes"]]
        lines += ["", f"Reply today: {', '.join(digest['needs_reply_today']) or 'nothing'}"]
        lines += [f"Can be closed: {', '.join(digest['can_close']) or 'nothing'}"]
        message = "\n".join(lines)
        # The chat operator also pushes what the call cost, under the key "openrouter_usage".
        usage = ti.xcom_pull(task_ids="summarise", key="openrouter_usage")
        print(message)
        print(f"{usage['prompt_tokens']} + {usage['completion_tokens']} tokens, ${usage['cost'] or 0:.6f}")
        return message  # in production: post it to Slack, e-mail it, store it...

    publish_digest(summarise.output)
