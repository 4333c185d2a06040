// Keeps a queued or running sync's progress current on an admin page, and reloads
// the page once the run has finished, so it shows the result without the operator
// reloading. Every element with data-sabito-run-progress="<the run's progress URL>"
// is followed; a page whose form the operator has started editing is not reloaded
// (that would lose the edit): it says the run has finished instead.
"use strict";
(function () {
    const POLL_MILLISECONDS = 2000;
    let edited = false;
    document.addEventListener("input", () => { edited = true; }, true);

    function follow(element) {
        const url = element.dataset.sabitoRunProgress;
        async function poll() {
            try {
                const response = await fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
                if (response.ok) {
                    const progress = await response.json();
                    element.innerHTML = progress.html;
                    if (progress.finished) {
                        if (!edited) {
                            window.location.reload();
                        } else {
                            element.insertAdjacentText("beforeend", " (finished: reload the page to see the result)");
                        }
                        return;
                    }
                }
            } catch (error) {
                // The server is restarting or the network blinked: try again at the next tick.
            }
            window.setTimeout(poll, POLL_MILLISECONDS);
        }
        window.setTimeout(poll, POLL_MILLISECONDS);
    }

    function start() {
        document.querySelectorAll("[data-sabito-run-progress]").forEach(follow);
    }
    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", start);
    } else {
        start();
    }
})();
