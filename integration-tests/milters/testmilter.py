#!/usr/bin/python3
"""The tests' own milter (pymilter): what it does to a message is chosen
by the message's Subject, so that one milter exercises every answer and
every change the protocol allows. Usage: testmilter.py PORT MACROFILE"""

import sys
import Milter


class Test(Milter.Base):
    def __init__(self):
        self.subject = ""

    def envrcpt(self, to, *params):
        # smtpd gives `<addr>`, cleanup (non_smtpd_milters) the bare address.
        if to.lstrip("<").startswith("refused"):
            self.setreply("550", "5.7.1", "recipient refused by the milter")
            return Milter.REJECT
        return Milter.CONTINUE

    def header(self, name, value):
        if name.lower() == "subject":
            self.subject = value
        return Milter.CONTINUE

    def eom(self):
        with open(sys.argv[2], "a") as f:
            for m in ("i", "j", "{daemon_name}", "{client_addr}", "{mail_addr}", "v",
                      "{mail_mailer}", "{mail_host}", "{rcpt_addr}", "{rcpt_mailer}", "{rcpt_host}"):
                f.write("%s=%s\n" % (m, self.getsymval(m)))
        s = self.subject
        if s == "edit":
            self.addheader("X-Added", "yes")
            self.addheader("X-Top", "above all", 0)
            self.addheader("X-Second", "folded\n line", 2)
            self.chgheader("Subject", 1, "edited")
            self.chgheader("X-Remove", 1, "")
            self.chgheader("X-Twice", 2, "second changed")
            self.chgheader("X-Missing", 1, "appended")
            self.replacebody(b"new body\r\nsecond line\r\n")
            self.addrcpt("<added@remote.example>")
            self.delrcpt("<gone@remote.example>")
            self.chgfrom("<changed@example.org>")
            return Milter.ACCEPT
        if s == "reject":
            self.setreply("554", "5.7.1", "content refused by the milter")
            return Milter.REJECT
        if s == "tempfail":
            return Milter.TEMPFAIL
        if s == "discard":
            return Milter.DISCARD
        if s == "quarantine":
            self.quarantine("held by the milter")
            return Milter.ACCEPT
        return Milter.CONTINUE


if __name__ == "__main__":
    Milter.factory = Test
    Milter.set_flags(
        Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGBODY | Milter.ADDRCPT
        | Milter.DELRCPT | Milter.CHGFROM | Milter.QUARANTINE
    )
    Milter.runmilter("testmilter", "inet:%s@127.0.0.1" % sys.argv[1], 60)
